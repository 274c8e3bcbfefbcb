"""``HybridRecommender``: LightFM hybrid matrix factorisation with explicit id/feature mappings.

A small class in the spirit of benfred/implicit: ``fit_partial`` (one or more epochs),
batch-first numpy APIs (``item_representations``, ``user_representations``, ``scores``),
``to_bytes`` / ``from_bytes`` (npz, no pickle, validated) and early ``ValueError``s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from lightfm import LightFM
from scipy import sparse

from recgrpc.model import artifact
from recgrpc.model.artifact import RecommenderArrays
from recgrpc.model.scoring import scores, with_bias_term

F32 = npt.NDArray[np.float32]
LOSSES = ("warp", "bpr", "warp-kos", "logistic")


@dataclass(frozen=True)
class TrainingParams:
    """LightFM hyper-parameters (stored with the model)."""

    loss: str = "warp"
    components: int = 64
    learning_rate: float = 0.05
    item_alpha: float = 0.0
    user_alpha: float = 0.0
    max_sampled: int = 10
    seed: int = 42

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.components < 1:
            raise ValueError("components must be at least 1")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be positive")
        if self.item_alpha < 0 or self.user_alpha < 0:
            raise ValueError("regularisation must not be negative")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelState:
    """A copy of the learned arrays (for early stopping: keep the best epoch's)."""

    user_embeddings: F32
    user_biases: F32
    item_embeddings: F32
    item_biases: F32


class HybridRecommender:
    """LightFM over identity + side features. Users and items are addressed by row index
    in ``user_ids`` / ``item_ids``; features by name (``user_feature_names`` ...)."""

    def __init__(
        self,
        params: TrainingParams,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        *,
        user_feature_names: Sequence[str],
        item_feature_names: Sequence[str],
        item_features: sparse.csr_matrix,
        user_features: sparse.csr_matrix | None = None,
    ) -> None:
        if item_features.shape != (len(item_ids), len(item_feature_names)):
            raise ValueError(
                f"item_features has shape {item_features.shape}, expected "
                f"({len(item_ids)}, {len(item_feature_names)})"
            )
        if user_features is not None and user_features.shape != (
            len(user_ids),
            len(user_feature_names),
        ):
            raise ValueError(f"user_features has shape {user_features.shape}")
        self.params = params
        self.user_ids = tuple(user_ids)
        self.item_ids = tuple(item_ids)
        self.user_feature_names = tuple(user_feature_names)
        self.item_feature_names = tuple(item_feature_names)
        self.item_features = item_features.tocsr().astype(np.float32)
        self.user_features = None if user_features is None else user_features.tocsr()
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {u: i for i, u in enumerate(self.item_ids)}
        self.user_feature_index = {n: i for i, n in enumerate(self.user_feature_names)}
        self.item_feature_index = {n: i for i, n in enumerate(self.item_feature_names)}
        self._model: Any = None
        self._state: ModelState | None = None
        self._item_cache: tuple[F32, F32] | None = None
        self._item_matrix: F32 | None = None  # [bias | embedding], for model.scoring
        self.epochs_trained = 0

    # -- training -------------------------------------------------------------------------

    def fit_partial(
        self,
        interactions: sparse.coo_matrix,
        sample_weight: sparse.coo_matrix | None = None,
        *,
        epochs: int = 1,
        num_threads: int = 2,
    ) -> HybridRecommender:
        """Train ``epochs`` more epochs on ``interactions`` (users x items, COO)."""
        if self.user_features is None:
            raise ValueError("this recommender was loaded for serving; it cannot be trained")
        if interactions.shape != (len(self.user_ids), len(self.item_ids)):
            raise ValueError(f"interactions has shape {interactions.shape}")
        if self._model is None:
            p = self.params
            self._model = LightFM(
                no_components=p.components,
                loss=p.loss,
                learning_rate=p.learning_rate,
                item_alpha=p.item_alpha,
                user_alpha=p.user_alpha,
                max_sampled=p.max_sampled,
                random_state=np.random.RandomState(p.seed),
            )
        self._model.fit_partial(
            interactions,
            user_features=self.user_features,
            item_features=self.item_features,
            sample_weight=sample_weight,
            epochs=epochs,
            num_threads=num_threads,
        )
        self._state = None
        self._item_cache = None
        self._item_matrix = None
        self.epochs_trained += epochs
        return self

    @property
    def state(self) -> ModelState:
        """The learned arrays (live view while training; copy with ``snapshot_state``)."""
        if self._state is not None:
            return self._state
        if self._model is None:
            raise ValueError("the recommender has not been trained")
        return ModelState(
            user_embeddings=self._model.user_embeddings,
            user_biases=self._model.user_biases,
            item_embeddings=self._model.item_embeddings,
            item_biases=self._model.item_biases,
        )

    def snapshot_state(self) -> ModelState:
        s = self.state
        return ModelState(
            s.user_embeddings.copy(), s.user_biases.copy(),
            s.item_embeddings.copy(), s.item_biases.copy(),
        )  # fmt: skip

    def restore_state(self, state: ModelState) -> None:
        """Freeze the recommender at ``state`` (further training starts a fresh LightFM)."""
        self._state = state
        self._model = None
        self._item_cache = None
        self._item_matrix = None

    # -- representations and scores -------------------------------------------------------

    def item_representations(self) -> tuple[F32, F32]:
        """(biases, embeddings) of the trained items; computed once per state."""
        if self._item_cache is None:
            s = self.state
            feats = self.item_features
            biases = np.asarray(feats @ s.item_biases, dtype=np.float32)
            embeddings = np.asarray(feats @ s.item_embeddings, dtype=np.float32)
            self._item_cache = (biases, embeddings)
        return self._item_cache

    def user_representations(self, features: sparse.csr_matrix | None = None) -> tuple[F32, F32]:
        """(biases, embeddings) of users given by feature rows (default: the training users)."""
        feats = self.user_features if features is None else features
        if feats is None:
            raise ValueError("no user feature matrix given")
        s = self.state
        return (
            np.asarray(feats @ s.user_biases, dtype=np.float32),
            np.asarray(feats @ s.user_embeddings, dtype=np.float32),
        )

    def scores(self, user_rows: npt.NDArray[np.integer[Any]]) -> F32:
        """Scores (len(user_rows) x items) for training users, bias included."""
        if self.user_features is None:
            raise ValueError("no user features: use user_representations with explicit rows")
        _, user_emb = self.user_representations(self.user_features[user_rows])
        if self._item_matrix is None:
            self._item_matrix = np.column_stack(self.item_representations())
        return scores(self._item_matrix, with_bias_term(user_emb))

    # -- persistence ----------------------------------------------------------------------

    def to_arrays(
        self,
        version: str,
        *,
        user_trained_until: npt.NDArray[np.float64],
        user_train_weight: F32,
        newest_event: float,
        extra_params: Mapping[str, Any] | None = None,
    ) -> RecommenderArrays:
        s = self.state
        typical = 1.0
        if self.user_features is not None:
            _, users = self.user_representations()
            norms = np.linalg.norm(users, axis=1)
            typical = float(np.median(norms)) if norms.size else 1.0
        feats = self.item_features
        return RecommenderArrays(
            version=version,
            params={**self.params.as_dict(), **(extra_params or {})},
            user_ids=np.array(self.user_ids, dtype=np.str_),
            item_ids=np.array(self.item_ids, dtype=np.str_),
            user_feature_names=np.array(self.user_feature_names, dtype=np.str_),
            item_feature_names=np.array(self.item_feature_names, dtype=np.str_),
            user_feature_embeddings=s.user_embeddings,
            user_feature_biases=s.user_biases,
            item_feature_embeddings=s.item_embeddings,
            item_feature_biases=s.item_biases,
            item_features_indptr=feats.indptr.astype(np.int32),
            item_features_indices=feats.indices.astype(np.int32),
            item_features_data=feats.data.astype(np.float32),
            user_trained_until=user_trained_until,
            user_train_weight=user_train_weight,
            typical_user_norm=typical,
            newest_event=newest_event,
        )

    @classmethod
    def from_arrays(cls, arrays: RecommenderArrays) -> HybridRecommender:
        """A serving-only recommender (no user feature matrix) from validated arrays."""
        known = {f.name for f in TrainingParams.__dataclass_fields__.values()}
        params = TrainingParams(**{k: v for k, v in arrays.params.items() if k in known})
        item_features = sparse.csr_matrix(
            (arrays.item_features_data, arrays.item_features_indices, arrays.item_features_indptr),
            shape=(arrays.item_ids.shape[0], arrays.item_feature_names.shape[0]),
        )
        rec = cls(
            params,
            arrays.user_ids.tolist(),
            arrays.item_ids.tolist(),
            user_feature_names=arrays.user_feature_names.tolist(),
            item_feature_names=arrays.item_feature_names.tolist(),
            item_features=item_features,
        )
        rec._state = ModelState(
            arrays.user_feature_embeddings,
            arrays.user_feature_biases,
            arrays.item_feature_embeddings,
            arrays.item_feature_biases,
        )
        return rec

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[HybridRecommender, RecommenderArrays]:
        """Load a stored artifact; ``ValueError`` when it is corrupt."""
        arrays = artifact.decode(data)
        return cls.from_arrays(arrays), arrays
