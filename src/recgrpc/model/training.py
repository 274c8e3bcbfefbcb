"""The recommender's training loop and the pure steps around it (no I/O).

LightFM epochs with early stopping on holdout NDCG@10, LightFM's input matrices, the promotion
gate, and the metrics table. ``jobs.train`` reads the database, calls these and stores the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recgrpc.config import Settings
from recgrpc.model import artifact
from recgrpc.model.evaluation import Holdout, Metrics, evaluate, sample_users
from recgrpc.model.features import InteractionData
from recgrpc.model.recommender import HybridRecommender, TrainingParams
from recgrpc.model.scoring import UserRow
from recgrpc.records import TrainingRows

MIN_TRAIN_PAIRS = 10
EARLY_STOPPING_USERS = 1000
FINAL_EVALUATION_USERS = 3000
PATIENCE = 3
K = 10


class NotEnoughData(ValueError):
    """Training refused: the database holds too little to fit and evaluate a model."""


def params_from_settings(settings: Settings, **overrides: object) -> TrainingParams:
    values: dict[str, object] = {
        "loss": settings.loss,
        "components": settings.components,
        "learning_rate": settings.learning_rate,
        "seed": settings.seed,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainingParams(**values)  # type: ignore[arg-type]


def fit_with_early_stopping(
    data: InteractionData,
    holdout: Holdout,
    params: TrainingParams,
    *,
    max_epochs: int,
    num_threads: int,
    lap: Callable[[str], None] = lambda _phase: None,
    on_epoch: Callable[[int, float, float], None] = lambda _epoch, _ndcg, _best: None,
) -> tuple[HybridRecommender, int, float]:
    """Fit epoch by epoch, keep the state of the best holdout NDCG@K, stop after ``PATIENCE``
    epochs without improvement. Returns the model, its best epoch and the weight scale.

    ``lap(phase)`` is called after each phase ("fit", "stopping") for the caller's timings,
    ``on_epoch(epoch, ndcg, best_ndcg)`` after each epoch (a progress bar).
    """
    rec = _recommender(data, params)
    weight_scale = float(holdout.train_weight.mean())
    interactions, weights = training_matrices(data, holdout, weight_scale, params.loss)
    stopping_users = sample_users(holdout.users, EARLY_STOPPING_USERS)
    best_ndcg, best_epoch, best_state, waited = -1.0, 0, None, 0
    for epoch in range(1, max_epochs + 1):
        rec.fit_partial(interactions, weights, epochs=1, num_threads=num_threads)
        lap("fit")
        ndcg = evaluate(rec.scores, holdout, k=K, users=stopping_users, with_auc=False).ndcg
        lap("stopping")
        on_epoch(epoch, ndcg, max(ndcg, best_ndcg))
        if ndcg > best_ndcg + 1e-5:
            best_ndcg, best_epoch, best_state, waited = ndcg, epoch, rec.snapshot_state(), 0
        else:
            waited += 1
            if waited >= PATIENCE:
                break
    assert best_state is not None
    rec.restore_state(best_state)
    return rec, best_epoch, weight_scale


def fit_on_everything(
    data: InteractionData, params: TrainingParams, *, epochs: int, weight_scale: float,
    num_threads: int,
) -> tuple[HybridRecommender, Holdout]:  # fmt: skip
    """The selected configuration refitted on every positive pair for ``epochs`` epochs (the
    holdout's best), and the all-pairs "holdout" its per-user arrays are computed from."""
    empty = sparse.csr_matrix((data.n_users, data.n_items), dtype=np.float32)
    everything = Holdout(
        train_user=data.pair_user, train_item=data.pair_item, train_weight=data.pair_weight,
        train_time=data.pair_time, train_strength=data.pair_strength, test=empty, seen=empty,
        users=np.zeros(0, dtype=np.int64),
    )  # fmt: skip
    rec = _recommender(data, params)
    interactions, weights = training_matrices(data, everything, weight_scale, params.loss)
    rec.fit_partial(interactions, weights, epochs=epochs, num_threads=num_threads)
    return rec, everything


def with_holdout_fit(
    served: artifact.RecommenderArrays, twin: artifact.RecommenderArrays
) -> artifact.RecommenderArrays:
    """``served`` carrying ``twin``'s LightFM arrays (same users, items and features)."""
    fit = {name: np.asarray(getattr(twin, name)) for name in artifact.HOLDOUT_FIT}
    return replace(served, holdout_fit=fit)


def _recommender(data: InteractionData, params: TrainingParams) -> HybridRecommender:
    return HybridRecommender(
        params,
        data.user_ids,
        data.item_ids,
        user_feature_names=data.user_feature_names,
        item_feature_names=data.item_feature_names,
        item_features=data.item_features,
        user_features=data.user_features,
    )


def trained_arrays(
    rec: HybridRecommender,
    data: InteractionData,
    holdout: Holdout,
    *,
    weight_scale: float,
    best_epoch: int,
    now: datetime,
    extra_params: dict[str, object] | None = None,
) -> artifact.RecommenderArrays:
    """The artifact arrays of a fitted model, with its version stamped in."""
    trained_until, train_weight = _per_user_training(data, holdout, weight_scale)
    arrays = rec.to_arrays(
        "pending",
        user_trained_until=trained_until,
        user_train_weight=train_weight,
        newest_event=data.newest_event,
        extra_params={"weight_scale": weight_scale, "epochs": best_epoch, **(extra_params or {})},
    )
    # Learned values plus the time to the microsecond: retraining on the same data gives a new
    # version, and the version tells models apart without encoding the artifact twice.
    fingerprint = hashlib.sha256(now.isoformat().encode())
    fingerprint.update(arrays.item_feature_embeddings.tobytes())
    fingerprint.update(arrays.user_feature_embeddings.tobytes())
    digest = fingerprint.hexdigest()[:8]
    return replace(arrays, version=f"{now:%Y%m%dT%H%M%S}-{digest}")


def training_matrices(
    data: InteractionData, holdout: Holdout, weight_scale: float, loss: str
) -> tuple[sparse.coo_matrix, sparse.coo_matrix]:
    """LightFM's interactions and sample weights (same coordinates, as LightFM requires).

    Ranking losses (WARP, BPR) learn from positives only: negatives (dismissals, dislikes, low
    ratings) just never appear as positives. The logistic loss takes them as explicit -1s.
    """
    users, items = holdout.train_user, holdout.train_item
    values = np.ones(users.size, dtype=np.float32)
    weights = (holdout.train_weight / weight_scale).astype(np.float32)
    if loss == "logistic" and data.negative_user.size:
        users = np.concatenate([users, data.negative_user])
        items = np.concatenate([items, data.negative_item])
        values = np.concatenate([values, -np.ones(data.negative_user.size, dtype=np.float32)])
        weights = np.concatenate([weights, np.ones(data.negative_user.size, dtype=np.float32)])
    shape = (data.n_users, data.n_items)
    return (
        sparse.coo_matrix((values, (users, items)), shape=shape),
        sparse.coo_matrix((weights, (users, items)), shape=shape),
    )


def require_enough(data: InteractionData, holdout: Holdout) -> None:
    if data.n_items < 2 or holdout.n_train < MIN_TRAIN_PAIRS or holdout.users.size == 0:
        raise NotEnoughData(
            f"not enough data to train: {data.pair_user.size} positive (user, item) pairs, "
            f"{data.n_items} active items, {holdout.users.size} users with a holdout; need at "
            f"least {MIN_TRAIN_PAIRS} training pairs, 2 items and one user with 3 or more "
            "distinct items. The active model is unchanged."
        )


def gate(
    new: Metrics, active: Metrics | None, active_version: str | None, force: bool
) -> tuple[bool, str]:
    """Whether to promote the new model, and the sentence saying why."""
    if active_version is None:
        return True, "promoted: no model was active"
    if active is None:
        return True, f"promoted: active model {active_version} could not be evaluated"
    comparison = f"NDCG@{K} {new.ndcg:.4f} vs active {active.ndcg:.4f} on the same holdout"
    if new.ndcg >= active.ndcg:
        return True, f"promoted: {comparison}"
    if force:
        return True, f"promoted by --force although worse: {comparison}"
    return False, f"kept as candidate (worse than active {active_version}): {comparison}"


def _per_user_training(
    data: InteractionData, holdout: Holdout, weight_scale: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    until = np.full(data.n_users, -np.inf)
    np.maximum.at(until, holdout.train_user, holdout.train_time)
    weight = np.bincount(
        holdout.train_user, weights=holdout.train_weight / weight_scale, minlength=data.n_users
    ).astype(np.float32)
    return until, weight


def user_rows(rows: TrainingRows, data: InteractionData) -> list[UserRow]:
    prefs: dict[str, dict[str, float]] = {}
    for uid, cat, score in rows.preferences:
        prefs.setdefault(uid, {})[cat] = score
    attrs = dict(rows.users)
    return [(uid, prefs.get(uid, {}), attrs.get(uid, {})) for uid in data.user_ids]


def metrics_table(columns: Sequence[tuple[str, Metrics]]) -> str:
    """Metrics side by side, one row per metric, plus each column's ratio to the last one."""
    names = [
        ("precision@10", "precision"),
        ("recall@10", "recall"),
        ("NDCG@10", "ndcg"),
        ("AUC", "auc"),
        ("coverage", "coverage"),
    ]
    width = max(12, *(len(title) for title, _ in columns))
    lines = ["metric".ljust(14) + "".join(title.rjust(width + 2) for title, _ in columns)]
    for label, attr in names:
        cells = "".join(f"{getattr(m, attr):.4f}".rjust(width + 2) for _, m in columns)
        lines.append(label.ljust(14) + cells)
    if len(columns) >= 2 and columns[-1][1].ndcg > 0:
        ratio = columns[0][1].ndcg / columns[-1][1].ndcg
        lines.append(f"NDCG@10 {columns[0][0]} / {columns[-1][0]}: {ratio:.2f}x")
    lines.append(f"users evaluated: {columns[0][1].users}")
    return "\n".join(lines)
