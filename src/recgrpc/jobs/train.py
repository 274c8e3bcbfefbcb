"""``recgrpc train`` and ``recgrpc evaluate``: the database around the recommender's training.

The flow: read the database in bulk -> features and weights -> per-user temporal holdout ->
LightFM epochs with early stopping on holdout NDCG@10 -> the EASE blend chosen on the holdout ->
the chosen configuration refitted on every pair (the holdout-fitted LightFM kept as its twin) ->
metrics for the model's twin and the trending baseline -> store the artifact as a candidate ->
score the active model's twin on the SAME holdout -> promote only if not worse (or forced) ->
write the top-N of every active user.
Too little data raises ``NotEnoughData`` before anything is written.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

from tqdm import tqdm

from recgrpc.config import Settings
from recgrpc.db import Database, discovery, neighbour_store
from recgrpc.db import model_store as ms
from recgrpc.db import training_data as td
from recgrpc.domain import utcnow
from recgrpc.jobs.top_n import write_top_n
from recgrpc.model import artifact, neighbour_artifact
from recgrpc.model.evaluation import (
    Metrics,
    constant_scores,
    evaluate,
    sample_users,
    temporal_holdout,
    trending_baseline,
)
from recgrpc.model.features import build_interaction_data
from recgrpc.model.recommender import TrainingParams
from recgrpc.model.representations import ModelView
from recgrpc.model.scoring import view_scores
from recgrpc.model.selection import BlendChoice, choose_blend, selection_lines
from recgrpc.model.training import (
    FINAL_EVALUATION_USERS,
    K,
    fit_on_everything,
    fit_with_early_stopping,
    gate,
    metrics_table,
    params_from_settings,
    require_enough,
    trained_arrays,
    user_rows,
    with_holdout_fit,
)
from recgrpc.model.training_blend import (
    blend_params,
    full_history,
    holdout_history,
    holdout_twin,
    selection_user_limit,
    with_ease,
)
from recgrpc.model.weights import EventWeights

log = logging.getLogger(__name__)


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
    """Seconds per phase: read, features, fit, stopping, selection, neighbours, evaluation,
    store, top_n."""
    selection: BlendChoice | None = None
    """The blend chosen on the holdout, with every candidate's score."""


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
    now = now or utcnow()
    params = params or params_from_settings(settings)
    max_epochs = settings.epochs if epochs is None else epochs
    if max_epochs < 1:
        raise ValueError("epochs must be at least 1")

    timings: dict[str, float] = {}
    clock = _PhaseClock(timings)
    with db.reader() as session:
        rows = td.load_training_rows(session)
        titles = discovery.active_titles(session)
        active = ms.active_model(session, ms.RECOMMENDER)
    clock.lap("read")
    data = build_interaction_data(rows, settings)
    holdout = temporal_holdout(data)
    require_enough(data, holdout)
    clock.lap("features")

    bar = tqdm(total=max_epochs, desc="training", unit="epoch", file=sys.stderr,
               disable=not progress)  # fmt: skip

    def on_epoch(_epoch: int, ndcg: float, best: float) -> None:
        bar.update()
        bar.set_postfix(ndcg=f"{ndcg:.4f}", best=f"{best:.4f}")

    with bar:
        rec, best_epoch, weight_scale = fit_with_early_stopping(
            data, holdout, params, max_epochs=max_epochs, num_threads=num_threads,
            lap=clock.lap, on_epoch=on_epoch,
        )  # fmt: skip
    selection_users = sample_users(holdout.users, selection_user_limit(data.n_items), seed=2)
    choice = choose_blend(rec.scores, holdout, data.n_users, data.n_items, selection_users)
    clock.lap("selection")
    # The selected configuration is refitted on every positive pair for serving (LightFM for
    # the best epoch count, EASE in closed form). The holdout-fitted LightFM is stored beside
    # it: the gate scores each model's holdout twin (that LightFM, EASE refitted on the
    # holdout's training pairs), the new and the active alike, never pairs it learned from.
    holdout_fit = trained_arrays(
        rec, data, holdout, weight_scale=weight_scale, best_epoch=best_epoch, now=now,
        extra_params=blend_params(choice),
    )  # fmt: skip
    full_rec, everything = fit_on_everything(
        data, params, epochs=best_epoch, weight_scale=weight_scale, num_threads=num_threads
    )
    served_fit = trained_arrays(
        full_rec, data, everything, weight_scale=weight_scale, best_epoch=best_epoch, now=now,
        extra_params=blend_params(choice),
    )  # fmt: skip
    arrays = with_ease(with_holdout_fit(served_fit, holdout_fit), data, choice)
    clock.lap("refit")
    version = arrays.version
    blob = artifact.encode(arrays)
    positives, events, texts = neighbour_artifact.training_inputs(
        data, rows, titles, EventWeights.of(settings)
    )
    neighbours = neighbour_artifact.build_neighbours(
        version,
        item_ids=data.item_ids,
        positives=positives,
        events=events,
        texts=texts,
        params=neighbour_artifact.NeighbourParams.from_settings(settings),
    )
    neighbour_blob = neighbour_artifact.encode(neighbours)
    clock.lap("neighbours")

    # Both models are scored through the serving path on the same users and exclusions.
    final_users = sample_users(holdout.users, FINAL_EVALUATION_USERS, seed=1)
    rows_of_users = user_rows(rows, data)
    twin = ModelView.build(holdout_twin(arrays, data, holdout), rows.items)
    model_scores = view_scores(twin, rows_of_users, holdout_history(twin, data, holdout))
    model_metrics = evaluate(model_scores, holdout, k=K, users=final_users)
    trending = trending_baseline(holdout, data.n_items, settings.trending_half_life_days)
    trending_metrics = evaluate(constant_scores(trending), holdout, k=K, users=final_users)

    active_metrics: Metrics | None = None
    if active is not None:
        try:
            active_arrays = holdout_twin(artifact.decode(active.artifact), data, holdout)
            active_view = ModelView.build(active_arrays, rows.items)
            active_scores = view_scores(
                active_view, rows_of_users, holdout_history(active_view, data, holdout)
            )
            active_metrics = evaluate(active_scores, holdout, k=K, users=final_users)
        except ValueError as exc:
            log.warning("active model %s cannot be evaluated: %s", active.version, exc)

    clock.lap("evaluation")
    promoted, decision = gate(
        model_metrics, active_metrics, None if active is None else active.version, force
    )
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
        neighbour_store.store_neighbours(
            session,
            recommender_version=version,
            params=neighbours.params,
            metrics=neighbour_artifact.summary(neighbours),
            artifact=neighbour_blob,
            now=now,
        )
        if promoted:
            ms.activate_model(session, ms.RECOMMENDER, version, now)
    clock.lap("store")
    written = 0
    if promoted and write_lists:
        served = ModelView.build(arrays, rows.items)
        written = write_top_n(
            db, served, data, rows_of_users, top_n=settings.top_n, now=now,
            history=full_history(served, data),
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
    require_enough(data, holdout)
    users = sample_users(holdout.users, FINAL_EVALUATION_USERS, seed=1)
    view = ModelView.build(
        holdout_twin(artifact.decode(active.artifact), data, holdout), rows.items
    )
    scores = view_scores(view, user_rows(rows, data), holdout_history(view, data, holdout))
    model_metrics = evaluate(scores, holdout, k=K, users=users)
    trending = trending_baseline(holdout, data.n_items, settings.trending_half_life_days)
    trending_metrics = evaluate(constant_scores(trending), holdout, k=K, users=users)
    return EvaluationReport(active.version, model_metrics, trending_metrics, holdout.n_test)


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
