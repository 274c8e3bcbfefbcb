"""A trained recommender aligned with the serving catalogue, for fast scoring.

Item representations are precomputed once per model (and per catalogue change) as float32
matrices ``[bias | embedding]`` so a request is one matrix-vector product with ``[1 | user]``:

- hybrid: identity + category/tag features (items the model never saw: features only),
- collaborative: identity only (behaviour), defined for items the model was trained on,
- content: category/tag features only, so items nobody touched are ranked like any other.

User vectors are built at request time from the user's current preferences and attributes
(plus identity for users the model knows), and folded in with the items they touched after
training: the weighted mean of those items' vectors, blended by how much new evidence there
is relative to what the model saw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model import artifact
from recgrpc.model.ann import ItemIndex
from recgrpc.model.artifact import RecommenderArrays
from recgrpc.model.ease_view import EaseView
from recgrpc.model.features import (
    feature_matrix,
    item_feature_weights,
    user_feature_weights,
)
from recgrpc.model.weights import EventWeights

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
CatalogRows = Sequence[tuple[str, Sequence[str], Sequence[str], datetime]]

_ONE = np.ones(1, dtype=np.float32)
"""The leading 1 of a user vector (``[1 | user]``), which adds the item's bias."""

PRIOR_WEIGHT_WITHOUT_HISTORY = 1.0
"""How much a user's preferences weigh against folded-in events when the model never saw them."""


def catalog_key(rows: CatalogRows) -> int:
    """Changes when an item is added/removed or its categories or tags change."""
    return hash(tuple((r[0], tuple(r[1]), tuple(r[2])) for r in rows))


@dataclass(frozen=True)
class ModelView:
    """The active model's representations aligned with the catalogue order."""

    version: str
    arrays: RecommenderArrays = field(repr=False)
    key: int
    hybrid: F32 = field(repr=False)
    collaborative: F32 = field(repr=False)
    content: F32 = field(repr=False)
    trained: npt.NDArray[np.bool_] = field(repr=False)
    """True for catalogue items the model was trained on (collaborative needs that)."""
    has_content: npt.NDArray[np.bool_] = field(repr=False)
    """True for items with at least one feature the model knows."""
    scorable: npt.NDArray[np.bool_] = field(repr=False)
    """True for items HYBRID can score (trained on, or with a known feature)."""
    unscored: Mapping[Algorithm, npt.NDArray[np.int64]] = field(repr=False)
    """Per source, the catalogue positions it cannot score (masked out before ranking)."""
    user_index: dict[str, int] = field(repr=False)
    user_feature_index: dict[str, int] = field(repr=False)
    weight_scale: float = 1.0
    ann: ItemIndex | None = field(default=None, repr=False)
    """Approximate search over ``hybrid``, built for catalogues of ``ann_min_items`` or more."""
    content_ann: ItemIndex | None = field(default=None, repr=False)
    """The same over ``content``."""
    ease: EaseView | None = field(default=None, repr=False)
    """The EASE part of the blend, when training chose one."""
    revision: int = 0
    """The artifact's revision (``artifact.revision``): a rewritten artifact is loaded again."""

    @classmethod
    def build(
        cls, arrays: RecommenderArrays, rows: CatalogRows, *, ann_min_items: int = 0
    ) -> ModelView:
        """Precompute item representations for ``rows`` (the serving catalogue order), and the
        approximate index when there are at least ``ann_min_items`` (0: never)."""
        n_model_items = arrays.item_ids.shape[0]
        emb, bias = arrays.item_feature_embeddings, arrays.item_feature_biases
        model_pos = {iid: i for i, iid in enumerate(arrays.item_ids.tolist())}
        feature_index = {n: i for i, n in enumerate(arrays.item_feature_names.tolist())}
        trained_rows = np.array([model_pos.get(r[0], -1) for r in rows], dtype=np.int64)
        trained = trained_rows >= 0

        content_feats = feature_matrix(
            [item_feature_weights(None, r[1], r[2]) for r in rows], feature_index
        )
        content = _with_bias(content_feats @ bias, content_feats @ emb)
        has_content = np.diff(content_feats.indptr) > 0

        model_feats = sparse.csr_matrix(
            (arrays.item_features_data, arrays.item_features_indices, arrays.item_features_indptr),
            shape=(n_model_items, emb.shape[0]),
        )
        hybrid = content.copy()
        if trained.any():
            picked = model_feats[trained_rows[trained]]
            hybrid[trained] = _with_bias(picked @ bias, picked @ emb)

        collaborative = np.zeros_like(content)
        # Identity features come first, in item_ids order.
        collaborative[trained, 0] = bias[trained_rows[trained]]
        collaborative[trained, 1:] = emb[trained_rows[trained]]
        # Column-major: scoring is one matrix-vector product per request, and BLAS walks a
        # column-major matrix with long contiguous runs (bench/recommend_latency.py). Indexing
        # and results are the same either way.
        hybrid, content = np.asfortranarray(hybrid), np.asfortranarray(content)
        return cls(
            version=arrays.version,
            arrays=replace(arrays, holdout_fit=None),  # only the promotion gate reads it
            key=catalog_key(rows),
            hybrid=hybrid,
            collaborative=np.asfortranarray(collaborative),
            content=content,
            trained=trained,
            has_content=has_content,
            scorable=trained | has_content,
            unscored={
                Algorithm.COLLABORATIVE: np.flatnonzero(~trained),
                Algorithm.CONTENT: np.flatnonzero(~has_content),
                # An item neither trained on nor described by known features has no score.
                Algorithm.HYBRID: np.flatnonzero(~(trained | has_content)),
            },
            user_index={u: i for i, u in enumerate(arrays.user_ids.tolist())},
            user_feature_index={n: i for i, n in enumerate(arrays.user_feature_names.tolist())},
            weight_scale=float(arrays.params.get("weight_scale", 1.0)) or 1.0,
            ann=_ann_index(hybrid, ann_min_items, "hybrid"),
            content_ann=_ann_index(content, ann_min_items, "content"),
            ease=EaseView.build(arrays, {r[0]: n for n, r in enumerate(rows)}),
            revision=artifact.revision(arrays),
        )

    def without_user(self, user_id: str) -> ModelView:
        """This view with ``user_id`` a stranger (an erased user): the items are unchanged, so
        only the user side is rebuilt, at once, without waiting for the stored artifact."""
        purged = artifact.without_user(self.arrays, user_id)
        if purged is None:
            return self
        return replace(
            self,
            arrays=purged,
            user_index={u: i for i, u in enumerate(purged.user_ids.tolist())},
            user_feature_index={n: i for i, n in enumerate(purged.user_feature_names.tolist())},
            revision=artifact.revision(purged),
        )

    def items_for(self, algorithm: Algorithm) -> F32:
        if algorithm == Algorithm.COLLABORATIVE:
            return self.collaborative
        if algorithm == Algorithm.CONTENT:
            return self.content
        return self.hybrid

    def unscored_by(self, algorithm: Algorithm) -> npt.NDArray[np.int64]:
        return self.unscored[Algorithm.HYBRID if algorithm == Algorithm.AUTO else algorithm]

    # -- users ----------------------------------------------------------------------------

    def base_user_vector(
        self,
        algorithm: Algorithm,
        user_id: str,
        preferences: Mapping[str, float],
        attributes: Mapping[str, str],
        *,
        use_identity: bool = True,
    ) -> F32 | None:
        """The user's vector from identity and/or features; None when nothing is known."""
        known = use_identity and user_id in self.user_index
        weights = user_feature_weights(
            user_id if known else None,
            preferences,
            attributes,
            identity=algorithm != Algorithm.CONTENT,
            content=algorithm != Algorithm.COLLABORATIVE,
        )
        index = self.user_feature_index
        known_weights = [(index[n], w) for n, w in weights.items() if n in index]
        if not known_weights:
            return None
        cols = np.array([c for c, _ in known_weights], dtype=np.int64)
        w = np.array([w for _, w in known_weights], dtype=np.float32)
        w /= w.sum()
        vector: F32 = w @ self.arrays.user_feature_embeddings[cols]
        return vector

    def user_matrix(
        self,
        algorithm: Algorithm,
        users: Sequence[tuple[str, Mapping[str, float], Mapping[str, str]]],
    ) -> tuple[F32, npt.NDArray[np.bool_]]:
        """Batch ``base_user_vector`` for (user_id, preferences, attributes) rows.

        Returns the vectors and a mask of users for whom any feature was known.
        """
        weights = [
            user_feature_weights(
                uid if uid in self.user_index else None,
                prefs,
                attrs,
                identity=algorithm != Algorithm.CONTENT,
                content=algorithm != Algorithm.COLLABORATIVE,
            )
            for uid, prefs, attrs in users
        ]
        feats = feature_matrix(weights, self.user_feature_index)
        vectors = np.asarray(feats @ self.arrays.user_feature_embeddings, dtype=np.float32)
        return vectors, np.diff(feats.indptr) > 0

    def model_row(self, context: domain.UserContext) -> int | None:
        """The user's row in the model, if the model knows them and they still exist (an
        erased user's identity embedding must not personalise anything until retraining)."""
        return self.user_index.get(context.user_id) if context.known else None

    def fold_in(
        self,
        algorithm: Algorithm,
        context: domain.UserContext,
        positions: Mapping[str, int],
        weights: EventWeights,
    ) -> tuple[F32 | None, float]:
        """Weighted mean vector of the items touched after training, and its total weight.

        For CONTENT every recent positive interaction counts (features describe them, the
        model's identity for the user does not); otherwise only those after the user's
        newest training event (or all, for a user the model does not know).
        """
        items = self.items_for(algorithm)
        row = self.model_row(context)
        cutoff = -np.inf
        if row is not None and algorithm != Algorithm.CONTENT:
            cutoff = float(self.arrays.user_trained_until[row])
        totals: dict[int, float] = {}
        for event in context.recent:
            if event.occurred_at.timestamp() <= cutoff:
                continue
            if event.item_id in context.dismissed_item_ids:
                continue
            pos = positions.get(event.item_id)
            if pos is None:
                continue
            totals[pos] = totals.get(pos, 0.0) + weights.weight(event.type.value, event.value)
        chosen = [(p, w) for p, w in totals.items() if w > 0]
        if algorithm == Algorithm.COLLABORATIVE:
            chosen = [(p, w) for p, w in chosen if self.trained[p]]
        if not chosen:
            return None, 0.0
        idx = np.array([p for p, _ in chosen], dtype=np.int64)
        w = np.array([w for _, w in chosen], dtype=np.float32)
        vector: F32 = (w / w.sum()) @ items[idx, 1:]
        return vector, float(w.sum()) / self.weight_scale

    def user_vector(
        self,
        algorithm: Algorithm,
        context: domain.UserContext,
        positions: Mapping[str, int],
        weights: EventWeights,
    ) -> F32 | None:
        """``[1 | user]`` for scoring ``items_for(algorithm)`` with ``model.scoring.scores``;
        None when nothing about the user is known."""
        base = self.base_user_vector(
            algorithm,
            context.user_id,
            context.preferences,
            context.attributes,
            use_identity=context.known,
        )
        fold, new_weight = (
            self.fold_in(algorithm, context, positions, weights) if context.recent else (None, 0.0)
        )
        if fold is None and base is None:
            return None
        typical = self.arrays.typical_user_norm or 1.0
        if fold is None:
            assert base is not None
            user = base
        else:
            fold_norm = float(np.linalg.norm(fold)) or 1.0
            if base is None:
                user = fold * (typical / fold_norm)
            else:
                row = self.model_row(context)
                prior = PRIOR_WEIGHT_WITHOUT_HISTORY
                if row is not None and algorithm != Algorithm.CONTENT:
                    prior = max(float(self.arrays.user_train_weight[row]), prior)
                share = new_weight / (new_weight + prior)
                base_norm = float(np.linalg.norm(base)) or typical
                user = (1.0 - share) * base + share * fold * (base_norm / fold_norm)
        return np.concatenate((_ONE, user), dtype=np.float32)


def _ann_index(items: F32, min_items: int, what: str) -> ItemIndex | None:
    if min_items <= 0 or items.shape[0] < min_items:
        return None
    started = time.perf_counter()
    index = ItemIndex(items)
    log.info(
        "approximate index over %d items' %s vectors built in %.1f s (%.0f MB)",
        items.shape[0], what, time.perf_counter() - started, index.memory_bytes / 2**20,
    )  # fmt: skip
    return index


def _with_bias(bias: npt.ArrayLike, emb: npt.ArrayLike) -> F32:
    b = np.asarray(bias, dtype=np.float32).reshape(-1, 1)
    e = np.asarray(emb, dtype=np.float32)
    return np.ascontiguousarray(np.hstack([b, e]), dtype=np.float32)


def refresh_view(
    previous: ModelView | None,
    rejected: str,
    version: str | None,
    artifact_bytes: bytes | None,
    rows: CatalogRows | None,
    *,
    ann_min_items: int = 0,
) -> tuple[ModelView | None, str]:
    """The model view for a new snapshot, and the version to not retry.

    Loads ``artifact_bytes`` when given (a newly activated version); otherwise keeps
    ``previous``, re-aligned if the catalogue changed. ``rows`` is None when the catalogue is
    unchanged since ``previous`` was built (it must be given with ``artifact_bytes``). A
    corrupt artifact is logged and the previous model keeps serving.
    """
    if version is None:
        return None, ""
    if artifact_bytes is not None:
        assert rows is not None, "a newly loaded model must be aligned with the catalogue"
        try:
            view = ModelView.build(
                artifact.decode(artifact_bytes), rows, ann_min_items=ann_min_items
            )
            return view, ""
        except ValueError:
            log.exception("model %s cannot be loaded; keeping the previous one", version)
            return _realigned(previous, rows, ann_min_items), version
    return _realigned(previous, rows, ann_min_items), rejected


def needs_load(
    previous: ModelView | None, rejected: str, version: str | None, revision: int = 0
) -> bool:
    """True when ``version`` is active but neither loaded (at ``revision``: a rewritten artifact
    is loaded again) nor known to be broken."""
    if version is None or version == rejected:
        return False
    return previous is None or previous.version != version or previous.revision < revision


def _realigned(
    view: ModelView | None, rows: CatalogRows | None, ann_min_items: int
) -> ModelView | None:
    if view is None or rows is None or view.key == catalog_key(rows):
        return view
    return ModelView.build(view.arrays, rows, ann_min_items=ann_min_items)
