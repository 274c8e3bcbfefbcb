"""``recgrpc train``: fit, evaluate against trending, store, gate, promote, write top-N.

The flow: read the database in bulk -> features and weights -> per-user temporal holdout ->
LightFM epochs with early stopping on holdout NDCG@10 -> metrics for the model and the trending
baseline -> store the artifact as a candidate -> re-evaluate the active model on the SAME
holdout -> promote only if not worse (or forced) -> write the top-N of every active user.
Too little data raises ``NotEnoughData`` before anything is written.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from scipy import sparse
from tqdm import tqdm

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import model_store as ms
from recgrpc.db import training_data as td
from recgrpc.domain import Algorithm
from recgrpc.model import artifact
from recgrpc.model.blend import blend
from recgrpc.model.evaluation import (
    Holdout,
    Metrics,
    ScoreFn,
    constant_scores,
    evaluate,
    sample_users,
    temporal_holdout,
    trending_baseline,
)
from recgrpc.model.features import InteractionData, build_interaction_data
from recgrpc.model.recommender import HybridRecommender, TrainingParams
from recgrpc.model.representations import ModelView
from recgrpc.model.selection import BlendChoice, choose_blend, selection_lines
from recgrpc.model.training_blend import (
    blend_params,
    full_history,
    holdout_history,
    selection_user_limit,
    with_ease,
)

log = logging.getLogger(__name__)

MIN_TRAIN_PAIRS = 10
EARLY_STOPPING_USERS = 1000
FINAL_EVALUATION_USERS = 3000
PATIENCE = 3
TOP_N_CHUNK_USERS = 500
K = 10


class NotEnoughData(ValueError):
    """Training refused: the database holds too little to fit and evaluate a model."""


@dataclass(frozen=True)
class TrainingReport:
    version: str
    promoted: bool
    decision: str
    model: Metrics
    trending: Metrics
    active: Metrics | None
    active_version: str | None
    epochs: int
    best_epoch: int
    users: int
    items: int
    train_pairs: int
    test_pairs: int
    seconds: float
    lists_written: int
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: read, features, fit, stopping, selection, evaluation, store, top_n."""
    selection: BlendChoice | None = None
    """The blend chosen on the holdout, with every candidate's score."""


def params_from_settings(settings: Settings, **overrides: object) -> TrainingParams:
    values: dict[str, object] = {
        "loss": settings.loss,
        "components": settings.components,
        "learning_rate": settings.learning_rate,
        "seed": settings.seed,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainingParams(**values)  # type: ignore[arg-type]


def train(
    db: Database,
    settings: Settings,
    *,
    params: TrainingParams | None = None,
    epochs: int | None = None,
    force: bool = False,
    progress: bool = True,
    write_lists: bool = True,
    now: datetime | None = None,
    num_threads: int = 2,
) -> TrainingReport:
    """Train, evaluate, store and (if not worse than the active model) promote a model."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    params = params or params_from_settings(settings)
    max_epochs = settings.epochs if epochs is None else epochs
    if max_epochs < 1:
        raise ValueError("epochs must be at least 1")

    timings: dict[str, float] = {}
    clock = _PhaseClock(timings)
    with db.reader() as session:
        rows = td.load_training_rows(session)
        active = ms.active_model(session, ms.RECOMMENDER)
    clock.lap("read")
    data = build_interaction_data(rows, settings)
    holdout = temporal_holdout(data)
    _require_enough(data, holdout)
    clock.lap("features")

    rec = HybridRecommender(
        params,
        data.user_ids,
        data.item_ids,
        user_feature_names=data.user_feature_names,
        item_feature_names=data.item_feature_names,
        item_features=data.item_features,
        user_features=data.user_features,
    )
    weight_scale = float(holdout.train_weight.mean())
    interactions, weights = training_matrices(data, holdout, weight_scale, params.loss)
    stopping_users = sample_users(holdout.users, EARLY_STOPPING_USERS)
    best_ndcg, best_epoch, best_state, waited = -1.0, 0, None, 0
    bar = tqdm(range(1, max_epochs + 1), desc="training", unit="epoch", file=sys.stderr,
               disable=not progress)  # fmt: skip
    for epoch in bar:
        rec.fit_partial(interactions, weights, epochs=1, num_threads=num_threads)
        clock.lap("fit")
        ndcg = evaluate(rec.scores, holdout, k=K, users=stopping_users, with_auc=False).ndcg
        clock.lap("stopping")
        bar.set_postfix(ndcg=f"{ndcg:.4f}", best=f"{max(ndcg, best_ndcg):.4f}")
        if ndcg > best_ndcg + 1e-5:
            best_ndcg, best_epoch, best_state, waited = ndcg, epoch, rec.snapshot_state(), 0
        else:
            waited += 1
            if waited >= PATIENCE:
                break
    bar.close()
    assert best_state is not None
    rec.restore_state(best_state)
    clock.lap("fit")
    selection_users = sample_users(holdout.users, selection_user_limit(data.n_items), seed=2)
    choice = choose_blend(rec.scores, holdout, data.n_users, data.n_items, selection_users)
    clock.lap("selection")

    # The model stays the one fitted without each user's newest positives: the gate then
    # compares models that never saw the holdout, and serving folds those events back in
    # (LightFM's fold-in, EASE's history of the newest events).
    extra = {"weight_scale": weight_scale, "epochs": best_epoch, **blend_params(choice)}
    trained_until, train_weight = _per_user_training(data, holdout, weight_scale)
    arrays = with_ease(
        rec.to_arrays(
            "pending", user_trained_until=trained_until, user_train_weight=train_weight,
            newest_event=data.newest_event, extra_params=extra,
        ),
        data, choice, holdout,
    )  # fmt: skip
    # Learned values plus the time to the microsecond: retraining on the same data gives a new
    # version, and the version tells models apart without encoding the artifact twice.
    fingerprint = hashlib.sha256(now.isoformat().encode())
    fingerprint.update(arrays.item_feature_embeddings.tobytes())
    fingerprint.update(arrays.user_feature_embeddings.tobytes())
    digest = fingerprint.hexdigest()[:8]
    version = f"{now:%Y%m%dT%H%M%S}-{digest}"
    arrays = _with_version(arrays, version)
    blob = artifact.encode(arrays)

    # Both models are scored through the serving path on the same users and exclusions.
    final_users = sample_users(holdout.users, FINAL_EVALUATION_USERS, seed=1)
    user_rows = _user_rows(rows, data)
    view = ModelView.build(arrays, rows.items)
    model_scores = _view_scores(view, user_rows, holdout_history(view, data, holdout))
    model_metrics = evaluate(model_scores, holdout, k=K, users=final_users)
    trending = trending_baseline(holdout, data.n_items, settings.trending_half_life_days)
    trending_metrics = evaluate(constant_scores(trending), holdout, k=K, users=final_users)

    active_metrics: Metrics | None = None
    if active is not None:
        try:
            active_view = ModelView.build(artifact.decode(active.artifact), rows.items)
            active_metrics = evaluate(
                _view_scores(active_view, user_rows, holdout_history(active_view, data, holdout)),
                holdout, k=K, users=final_users,
            )  # fmt: skip
        except ValueError as exc:
            log.warning("active model %s cannot be evaluated: %s", active.version, exc)

    clock.lap("evaluation")
    promoted, decision = _gate(model_metrics, active_metrics, active, force)
    metrics = {
        "model": model_metrics.as_dict(),
        "trending": trending_metrics.as_dict(),
        "active": None if active_metrics is None else active_metrics.as_dict(),
        "holdout": {"users": int(holdout.users.size), "test_pairs": holdout.n_test},
        "decision": decision,
        "selection": {"chosen": choice.describe(), "candidates": choice.candidates},
    }
    with db.writer() as session:
        ms.store_model(
            session,
            kind=ms.RECOMMENDER,
            version=version,
            params=arrays.params,
            metrics=metrics,
            artifact=blob,
            now=now,
        )
        if promoted:
            ms.activate_model(session, ms.RECOMMENDER, version, now)
    clock.lap("store")
    written = 0
    if promoted and write_lists:
        written = write_top_n(
            db, view, data, user_rows, top_n=settings.top_n, now=now,
            history=full_history(view, data),
        )  # fmt: skip
        clock.lap("top_n")
    return TrainingReport(
        version=version,
        promoted=promoted,
        decision=decision,
        model=model_metrics,
        trending=trending_metrics,
        active=active_metrics,
        active_version=None if active is None else active.version,
        epochs=rec.epochs_trained,
        best_epoch=best_epoch,
        users=data.n_users,
        items=data.n_items,
        train_pairs=holdout.n_train,
        test_pairs=holdout.n_test,
        seconds=time.perf_counter() - started,
        lists_written=written,
        timings=timings,
        selection=choice,
    )


class _PhaseClock:
    """Accumulates wall time per named phase."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.into[phase] = self.into.get(phase, 0.0) + now - self.last
        self.last = now


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


def _require_enough(data: InteractionData, holdout: Holdout) -> None:
    if data.n_items < 2 or holdout.n_train < MIN_TRAIN_PAIRS or holdout.users.size == 0:
        raise NotEnoughData(
            f"not enough data to train: {data.pair_user.size} positive (user, item) pairs, "
            f"{data.n_items} active items, {holdout.users.size} users with a holdout; need at "
            f"least {MIN_TRAIN_PAIRS} training pairs, 2 items and one user with 3 or more "
            "distinct items. The active model is unchanged."
        )


def _gate(
    new: Metrics, active: Metrics | None, stored: ms.StoredModel | None, force: bool
) -> tuple[bool, str]:
    if stored is None:
        return True, "promoted: no model was active"
    if active is None:
        return True, f"promoted: active model {stored.version} could not be evaluated"
    comparison = f"NDCG@{K} {new.ndcg:.4f} vs active {active.ndcg:.4f} on the same holdout"
    if new.ndcg >= active.ndcg:
        return True, f"promoted: {comparison}"
    if force:
        return True, f"promoted by --force although worse: {comparison}"
    return False, f"kept as candidate (worse than active {stored.version}): {comparison}"


def _with_version(arrays: artifact.RecommenderArrays, version: str) -> artifact.RecommenderArrays:
    return replace(arrays, version=version)


def _per_user_training(
    data: InteractionData, holdout: Holdout, weight_scale: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    until = np.full(data.n_users, -np.inf)
    np.maximum.at(until, holdout.train_user, holdout.train_time)
    weight = np.bincount(
        holdout.train_user, weights=holdout.train_weight / weight_scale, minlength=data.n_users
    ).astype(np.float32)
    return until, weight


UserRow = tuple[str, Mapping[str, float], Mapping[str, str]]


def _user_rows(rows: td.TrainingRows, data: InteractionData) -> list[UserRow]:
    prefs: dict[str, dict[str, float]] = {}
    for uid, cat, score in rows.preferences:
        prefs.setdefault(uid, {})[cat] = score
    attrs = dict(rows.users)
    return [(uid, prefs.get(uid, {}), attrs.get(uid, {})) for uid in data.user_ids]


def _view_scores(
    view: ModelView, user_rows: Sequence[UserRow], history: sparse.csr_matrix | None = None
) -> ScoreFn:
    """HYBRID scores through the serving representations, blended with EASE from ``history``
    (users x catalogue recency weights) when the view has an EASE part."""
    items = view.hybrid

    def score(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        users, _ = view.user_matrix(Algorithm.HYBRID, [user_rows[r] for r in rows])
        out: npt.NDArray[np.float32] = users @ items[:, 1:].T
        out += items[:, 0][None, :]
        if view.ease is not None and history is not None:
            out = blend(out, view.ease.batch_scores(history[rows]), view.ease.alpha)
        return out

    return score


def write_top_n(
    db: Database,
    view: ModelView,
    data: InteractionData,
    user_rows: Sequence[UserRow],
    *,
    top_n: int,
    now: datetime,
    history: sparse.csr_matrix | None = None,
) -> int:
    """Score every active user (interactions or preferences) in blocks, keep the top-N unseen
    items, and replace their stored lists. Returns the number of lists written.

    Scoring the next block (numpy, which releases the GIL) overlaps with writing the current
    one, so the whole takes about the longer of the two rather than their sum.
    """
    items = view.hybrid
    n_items = items.shape[0]
    n = min(top_n, n_items)
    users, known = view.user_matrix(Algorithm.HYBRID, user_rows)
    active = np.flatnonzero(known)
    seen = sparse.csr_matrix(
        (
            np.ones(data.pair_user.size + data.negative_user.size, dtype=np.float32),
            (
                np.concatenate([data.pair_user, data.negative_user]),
                np.concatenate([data.pair_item, data.negative_item]),
            ),
        ),
        shape=(data.n_users, n_items),
    )

    def top_of(
        rows: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        s = users[rows] @ items[:, 1:].T
        s += items[:, 0][None, :]
        if view.ease is not None and history is not None:
            s = blend(s, view.ease.batch_scores(history[rows]), view.ease.alpha)
        blocked = seen[rows].tocoo()
        s[blocked.row, blocked.col] = -np.inf
        part = np.argpartition(s, n_items - n, axis=1)[:, n_items - n :]  # no negated copy
        part_scores = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(
            part_scores, order, axis=1
        )

    # One transaction per chunk: each user's list is replaced atomically, the per-user locks
    # stay few, and servers recording impressions meanwhile never wait long for the database.
    chunks = [active[i : i + TOP_N_CHUNK_USERS] for i in range(0, active.size, TOP_N_CHUNK_USERS)]
    with db.writer() as session:
        td.refresh_recommendation_statistics(session)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="top-n") as pool:
        pending = pool.submit(top_of, chunks[0]) if chunks else None
        for k, chunk in enumerate(chunks):
            assert pending is not None
            top_items, top_scores = pending.result()
            pending = pool.submit(top_of, chunks[k + 1]) if k + 1 < len(chunks) else None
            with db.writer() as session:
                td.replace_top_n(
                    session,
                    user_ids=[data.user_ids[r] for r in chunk],
                    item_ids=data.item_ids,
                    top_items=top_items,
                    top_scores=top_scores,
                    algorithm=Algorithm.HYBRID.value,
                    model_version=view.version,
                    generated_at=now,
                )
    return int(active.size)


@dataclass(frozen=True)
class EvaluationReport:
    version: str
    model: Metrics
    trending: Metrics
    test_pairs: int


def evaluate_active(db: Database, settings: Settings) -> EvaluationReport:
    """The active model against trending on a fresh temporal holdout of today's data.

    Raises ``NotEnoughData`` when there is no holdout and ``LookupError`` without an active model.
    """
    with db.reader() as session:
        rows = td.load_training_rows(session)
        active = ms.active_model(session, ms.RECOMMENDER)
    if active is None:
        raise LookupError("no recommender model is active; run `recgrpc train`")
    data = build_interaction_data(rows, settings)
    holdout = temporal_holdout(data)
    _require_enough(data, holdout)
    users = sample_users(holdout.users, FINAL_EVALUATION_USERS, seed=1)
    view = ModelView.build(artifact.decode(active.artifact), rows.items)
    scores = _view_scores(view, _user_rows(rows, data), holdout_history(view, data, holdout))
    model_metrics = evaluate(scores, holdout, k=K, users=users)
    trending = trending_baseline(holdout, data.n_items, settings.trending_half_life_days)
    trending_metrics = evaluate(constant_scores(trending), holdout, k=K, users=users)
    return EvaluationReport(active.version, model_metrics, trending_metrics, holdout.n_test)


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


def format_training_report(report: TrainingReport) -> str:
    columns = [("model", report.model)]
    if report.active is not None:
        columns.append(("active", report.active))
    columns.append(("trending", report.trending))
    return "\n".join(
        [
            f"model {report.version}: {report.users} users, {report.items} items, "
            f"{report.train_pairs} training pairs, {report.test_pairs} held out; "
            f"{report.epochs} epochs (best {report.best_epoch}) in {report.seconds:.1f}s "
            f"({', '.join(f'{k} {v:.1f}s' for k, v in report.timings.items())})",
            metrics_table(columns),
            *selection_lines(report.selection),
            f"active model before this run: {report.active_version or 'none'}",
            report.decision,
            f"top-N written for {report.lists_written} users" if report.promoted else "",
        ]
    ).rstrip()
