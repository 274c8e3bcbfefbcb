"""``recgrpc train-churn``: labelled snapshots from the database, choose a model family on a
later cut-off, refit the winner, store it as active.

Candidates train only on outcomes known at the evaluation cut-off, as they would in production,
so their evaluation is an honest forecast (see ``model.churn_fitting.training_cutoffs``); the
winner is then refitted with the evaluation snapshot too (``model.churn_selection``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from recgrpc.db import Database, churn_data, model_store
from recgrpc.domain import utcnow
from recgrpc.jobs.churn_scoring import churn_features
from recgrpc.model import churn_artifact
from recgrpc.model.churn_features import FEATURE_NAMES
from recgrpc.model.churn_fitting import new_version, training_cutoffs
from recgrpc.model.churn_linear import AnyChurnModel
from recgrpc.model.churn_selection import (
    DESCRIPTION,
    FAMILIES,
    Selection,
    fit_family,
    select_family,
)
from recgrpc.model.churn_trees import ChurnModel


def churn_labels(
    session: Session, user_ids: Sequence[str], as_of: datetime, horizon_days: int
) -> npt.NDArray[np.int8]:
    """1 where the user has no interaction in ``(as_of, as_of + horizon_days]``, else 0."""
    returned = churn_data.active_user_ids(session, as_of, as_of + timedelta(days=horizon_days))
    return np.array([0 if uid in returned else 1 for uid in user_ids], dtype=np.int8)


@dataclass(frozen=True, slots=True)
class ChurnTrainingReport:
    """What one ``train-churn`` run fitted, on which snapshots, and how it evaluated."""

    model: AnyChurnModel
    """The selected family refitted on every labelled snapshot (what is stored and served)."""
    selection: Selection
    as_of: datetime
    evaluation_cutoff: datetime
    training_cutoffs: tuple[datetime, ...]
    training_rows: int
    training_churn_rate: float
    evaluation_rows: int
    evaluation_churn_rate: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def model_metrics(self) -> dict[str, Any]:
        """The selected family's metrics on the held-out cut-off (before the refit)."""
        return self.selection.selected.metrics

    @property
    def baseline_metrics(self) -> dict[str, Any]:
        """Recency alone on the held-out cut-off."""
        return self.selection.recency.metrics


def default_as_of(session: Session, now: datetime) -> datetime:
    """The end of the recorded history, never later than now.

    On a live system this is (almost) now; on imported history it is where the data ends, so
    the label windows are not empty because the data stopped.
    """
    span = churn_data.history_span(session)
    if span is None:
        return now
    return min(span[1], now)


def train_churn(
    db: Database,
    *,
    as_of: datetime,
    horizon_days: int,
    step_days: int = 14,
    max_cutoffs: int = 12,
    now: datetime | None = None,
    families: tuple[str, ...] = FAMILIES,
) -> ChurnTrainingReport:
    """Build labelled snapshots, fit, evaluate on the latest unused cut-off, store as active.

    The evaluation cut-off is ``as_of - horizon_days`` (its label window ends at ``as_of``);
    training uses earlier cut-offs every ``step_days``. ``families`` are the candidates.
    """
    if horizon_days < 1:
        raise ValueError("horizon_days must be at least 1")
    trained_at = now or utcnow()
    evaluation_cutoff = as_of - timedelta(days=horizon_days)
    with db.reader() as session:
        span = churn_data.history_span(session)
        if span is None or span[0] >= evaluation_cutoff:
            raise ValueError(
                f"not enough history: need interactions before {evaluation_cutoff.isoformat()} "
                f"(as_of minus {horizon_days} days)"
            )
        cutoffs = training_cutoffs(
            span[0],
            evaluation_cutoff,
            horizon_days=horizon_days,
            step_days=step_days,
            max_cutoffs=max_cutoffs,
        )
        if not cutoffs:
            raise ValueError(
                "not enough history for a training cut-off: need about "
                f"{2 * horizon_days + 7} days of interactions before as_of"
            )
        train_tables = [churn_features(session, c) for c in cutoffs]
        train_labels = [
            churn_labels(session, t.user_ids, t.as_of, horizon_days) for t in train_tables
        ]
        evaluation = churn_features(session, evaluation_cutoff)
        evaluation_labels = churn_labels(
            session, evaluation.user_ids, evaluation_cutoff, horizon_days
        )
    x_train = np.vstack([t.values for t in train_tables])
    y_train = np.concatenate(train_labels)
    if len(evaluation.user_ids) == 0:
        raise ValueError("no users with history at the evaluation cut-off")

    version = new_version(trained_at)
    selection = select_family(
        (x_train, y_train),
        (evaluation.values, evaluation_labels),
        horizon_days=horizon_days,
        version=version,
        families=families,
    )
    family = selection.selected.family
    model = fit_family(
        family,
        np.vstack([x_train, evaluation.values]),
        np.concatenate([y_train, evaluation_labels]),
        horizon_days=horizon_days,
        version=version,
    )
    params: dict[str, Any] = {
        "as_of": as_of.isoformat(),
        "horizon_days": horizon_days,
        "step_days": step_days,
        "evaluation_cutoff": evaluation_cutoff.isoformat(),
        "training_cutoffs": [c.isoformat() for c in cutoffs],
        "features": list(FEATURE_NAMES),
        "family": family,
        "classifier": DESCRIPTION[family],
        "refitted_with_evaluation_cutoff": True,
    }
    if isinstance(model, ChurnModel):
        params["trees"] = len(model.tree_roots)
    report = ChurnTrainingReport(
        model=model,
        selection=selection,
        as_of=as_of,
        evaluation_cutoff=evaluation_cutoff,
        training_cutoffs=tuple(cutoffs),
        training_rows=len(y_train),
        training_churn_rate=float(y_train.mean()),
        evaluation_rows=len(evaluation_labels),
        evaluation_churn_rate=float(evaluation_labels.mean()),
        params=params,
    )
    metrics = {
        **_json_metrics(report.model_metrics),
        "family": family,
        "baseline": _json_metrics(report.baseline_metrics),
        "candidates": {c.family: _json_metrics(c.metrics) for c in selection.candidates},
        "training_rows": report.training_rows,
        "evaluation_rows": report.evaluation_rows,
        "evaluation_churn_rate": report.evaluation_churn_rate,
    }
    with db.writer() as session:
        model_store.store_active_model(
            session,
            kind=model_store.CHURN,
            version=version,
            artifact=churn_artifact.encode(model),
            params=params,
            metrics=metrics,
            now=trained_at,
        )
    return report


def _json_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN; a one-class evaluation has no AUC.
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()
    }


def format_report(report: ChurnTrainingReport) -> str:
    """The candidates table and the selected model's calibration, printed by ``train-churn``."""
    selection = report.selection
    m = report.model_metrics
    horizon = report.model.horizon_days
    lines = [
        f"churn model {report.model.version} (active), horizon {horizon} days, "
        f"family {selection.selected.family}: {DESCRIPTION[selection.selected.family]}",
        f"training: {len(report.training_cutoffs)} cut-offs "
        f"{report.training_cutoffs[-1]:%Y-%m-%d}..{report.training_cutoffs[0]:%Y-%m-%d}, "
        f"{report.training_rows} user snapshots, churn rate {report.training_churn_rate:.3f}",
        f"held out: cut-off {report.evaluation_cutoff:%Y-%m-%d %H:%M} UTC, "
        f"{report.evaluation_rows} users, churn rate {report.evaluation_churn_rate:.3f}",
        "",
        f"{'candidate':<14}{'ROC-AUC':>9}{f'AUC active<={horizon}d':>17}{'log loss':>10}"
        f"{'Brier':>8}{'vs recency':>12}",
    ]
    recency_auc = selection.recency.metrics["roc_auc"]
    for candidate in (*selection.candidates, selection.recency):
        c = candidate.metrics
        name = "recency-only" if candidate is selection.recency else candidate.family
        mark = " <- selected" if candidate is selection.selected else ""
        lines.append(
            f"{name:<14}{c['roc_auc']:>9.4f}{c['roc_auc_recently_active']:>17.4f}"
            f"{c['log_loss']:>10.4f}{c['brier']:>8.4f}{c['roc_auc'] - recency_auc:>+12.4f}{mark}"
        )
    lines += [
        f"selected {selection.selected.family} (best held-out ROC-AUC, log loss breaks ties), "
        "refitted on every labelled cut-off",
        "",
        f"calibration ({selection.selected.family} on the held-out cut-off, equal-count bins):",
        f"{'users':>8}{'predicted':>11}{'observed':>10}",
    ]
    lines += [
        f"{row['users']:>8}{row['predicted']:>11.3f}{row['observed']:>10.3f}"
        for row in m["calibration"]
    ]
    return "\n".join(lines)
