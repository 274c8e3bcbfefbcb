"""``recgrpc train-churn``: labelled snapshots from the database, fit, evaluate, store as active.

Training uses only outcomes known at the evaluation cut-off, as it would in production, so the
evaluation is an honest forecast (see ``model.churn_fitting.training_cutoffs``).
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
from recgrpc.model.churn_fitting import (
    classification_metrics,
    fit_churn_model,
    fit_recency_baseline,
    new_version,
    roc_auc,
    training_cutoffs,
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

    model: ChurnModel
    as_of: datetime
    evaluation_cutoff: datetime
    training_cutoffs: tuple[datetime, ...]
    training_rows: int
    training_churn_rate: float
    evaluation_rows: int
    evaluation_churn_rate: float
    model_metrics: dict[str, Any]
    baseline_metrics: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


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
) -> ChurnTrainingReport:
    """Build labelled snapshots, fit, evaluate on the latest unused cut-off, store as active.

    The evaluation cut-off is ``as_of - horizon_days`` (its label window ends at ``as_of``);
    training uses earlier cut-offs every ``step_days``.
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
    model = fit_churn_model(x_train, y_train, horizon_days=horizon_days, version=version)
    baseline = fit_recency_baseline(x_train, y_train)
    model_risk = model.risk(evaluation.values)
    baseline_risk = baseline(evaluation.values)
    model_metrics = classification_metrics(evaluation_labels, model_risk)
    baseline_metrics = classification_metrics(evaluation_labels, baseline_risk)
    # Users silent for longer than the horizon are easy; report the rest on their own too.
    recent = evaluation.values[:, FEATURE_NAMES.index("days_since_last_event")] <= horizon_days
    for found, risk in ((model_metrics, model_risk), (baseline_metrics, baseline_risk)):
        found["roc_auc_recently_active"] = roc_auc(evaluation_labels[recent], risk[recent])
    params: dict[str, Any] = {
        "as_of": as_of.isoformat(),
        "horizon_days": horizon_days,
        "step_days": step_days,
        "evaluation_cutoff": evaluation_cutoff.isoformat(),
        "training_cutoffs": [c.isoformat() for c in cutoffs],
        "features": list(FEATURE_NAMES),
        "classifier": "gradient-boosted trees + Platt scaling",
        "trees": len(model.tree_roots),
    }
    report = ChurnTrainingReport(
        model=model,
        as_of=as_of,
        evaluation_cutoff=evaluation_cutoff,
        training_cutoffs=tuple(cutoffs),
        training_rows=len(y_train),
        training_churn_rate=float(y_train.mean()),
        evaluation_rows=len(evaluation_labels),
        evaluation_churn_rate=float(evaluation_labels.mean()),
        model_metrics=model_metrics,
        baseline_metrics=baseline_metrics,
        params=params,
    )
    metrics = {
        **{k: _json_number(v) for k, v in model_metrics.items()},
        "baseline": {k: _json_number(v) for k, v in baseline_metrics.items()},
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


def _json_number(value: Any) -> Any:
    # JSON has no NaN; a one-class evaluation has no AUC.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_report(report: ChurnTrainingReport) -> str:
    """The metrics table printed by ``recgrpc train-churn``."""
    m, b = report.model_metrics, report.baseline_metrics
    lines = [
        f"churn model {report.model.version} (active), horizon {report.model.horizon_days} days",
        f"training: {len(report.training_cutoffs)} cut-offs "
        f"{report.training_cutoffs[-1]:%Y-%m-%d}..{report.training_cutoffs[0]:%Y-%m-%d}, "
        f"{report.training_rows} user snapshots, churn rate {report.training_churn_rate:.3f}",
        f"evaluation: cut-off {report.evaluation_cutoff:%Y-%m-%d %H:%M} UTC, "
        f"{report.evaluation_rows} users, churn rate {report.evaluation_churn_rate:.3f}",
        "",
        f"{'metric':<22}{'model':>10}{'recency-only':>14}",
    ]
    for key, label in (
        ("roc_auc", "ROC-AUC"),
        ("roc_auc_recently_active", f"ROC-AUC active<={report.model.horizon_days}d"),
        ("log_loss", "log loss"),
        ("brier", "Brier score"),
        ("calibration_error", "calibration error"),
    ):
        lines.append(f"{label:<22}{m[key]:>10.4f}{b[key]:>14.4f}")
    lines += [
        "",
        "calibration (model, equal-count bins):",
        f"{'users':>8}{'predicted':>11}{'observed':>10}",
    ]
    lines += [
        f"{row['users']:>8}{row['predicted']:>11.3f}{row['observed']:>10.3f}"
        for row in m["calibration"]
    ]
    return "\n".join(lines)
