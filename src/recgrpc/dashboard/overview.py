"""The Overview and Models pages: what each template is given, read in one session per page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from recgrpc.dashboard import charts
from recgrpc.dashboard.online import DAY, combined, day_of, online_metrics_by_day
from recgrpc.dashboard.sources import Sources
from recgrpc.db import analytics, model_store
from recgrpc.db import training_data as td
from recgrpc.model.evaluation import POSITIVE_TYPES, OnlineMetrics

EVENTS_HOURS = 7 * 24
ONLINE_DAYS = 30
HIT_WINDOW = timedelta(hours=24)
"""A shown item counts as a hit when the user acts on it within this long (``recgrpc evaluate``)."""
RISK_LEVELS = ("LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True)
class FallbackRow:
    reason: str
    lists: int
    share: float


def overview(sources: Sources) -> dict[str, Any]:
    """Catalogue and traffic counts, events per hour, online metrics per day, fallbacks, churn."""
    handlers = sources.handlers
    now = sources.now()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    events_since = this_hour - timedelta(hours=EVENTS_HOURS - 1)
    online_since = day_of(now) - DAY * (ONLINE_DAYS - 1)
    with handlers.db.reader() as session:
        totals = analytics.totals(session)
        hourly = analytics.events_per_hour(session, events_since)
        reasons = analytics.fallback_reasons(session, online_since)
        levels = analytics.churn_levels(session)
        impressions = td.impressions_since(session, online_since)
        feedback = td.feedback_since(session, online_since)
        interactions = analytics.events_after_lists(
            session, online_since, HIT_WINDOW, POSITIVE_TYPES
        )
        active = {
            kind: model_store.active_model_version(session, kind)
            for kind in (model_store.RECOMMENDER, model_store.CHURN)
        }
    hours = [events_since + timedelta(hours=h) for h in range(EVENTS_HOURS)]
    events_chart = charts.bar_chart(
        "Events per hour, last 7 days (UTC)",
        [(f"{h:%a %d %H}:00", float(hourly.get(h, 0))) for h in hours],
        label_every=24,
    )
    daily = online_metrics_by_day(impressions, feedback, interactions, HIT_WINDOW)
    served = sum(n for _, n in reasons)
    fallbacks = [FallbackRow(reason, n, n / served) for reason, n in reasons if reason]
    judged = sum(levels.values())
    return {
        "totals": totals,
        "events_since": events_since,
        "online_since": online_since,
        "events_last_7_days": sum(hourly.values()),
        "events_chart": events_chart,
        "online_days": ONLINE_DAYS,
        "online_rows": combined(daily),
        "ctr_chart": _online_chart(
            "Click-through rate per day", daily, online_since, now, "click_through_rate"
        ),
        "precision_chart": _online_chart(
            "Precision at curation per day (hits within 24 h)",
            daily,
            online_since,
            now,
            "precision_at_curation",
        ),
        "lists_last_30_days": served,
        "fallback_rate": sum(r.lists for r in fallbacks) / served if served else 0.0,
        "fallbacks": fallbacks,
        "churn_levels": [(level, levels.get(level, 0)) for level in RISK_LEVELS],
        "churn_users": judged,
        "churn_chart": charts.bar_chart(
            "Users by latest churn risk level",
            [(level, float(levels.get(level, 0))) for level in RISK_LEVELS],
            tones={level: level for level in RISK_LEVELS},
            width=420,
            height=180,
        ),
        "active_models": active,
        "serving_model": handlers.engine.snapshot.model_version,
    }


def series_name(row: OnlineMetrics) -> str:
    return f"{row.algorithm} · {row.model_version}" if row.model_version else row.algorithm


def _online_chart(
    title: str, daily: list[Any], start: datetime, now: datetime, metric: str
) -> charts.Chart:
    series: dict[str, list[tuple[datetime, float]]] = {}
    for day in daily:
        for row in day.groups:
            series.setdefault(series_name(row), []).append((day.day, getattr(row, metric)))
    weekly = [(start + DAY * k, f"{start + DAY * k:%b %d}") for k in range(0, ONLINE_DAYS, 7)]
    return charts.line_chart(
        title, series, start, day_of(now), x_labels=weekly, fmt=charts.percent, width=420
    )


@dataclass(frozen=True)
class ModelView:
    record: analytics.ModelRecord
    why: str
    """Why it has its status: the promotion decision, and what retired it."""
    offline: list[tuple[str, dict[str, Any] | None]]
    """Metric columns: (name, metrics) for the model and what it was compared with."""
    params: list[tuple[str, Any]]
    holdout: str = ""
    """What the offline metrics were measured on."""


RECOMMENDER_METRICS = ("precision", "recall", "ndcg", "auc", "coverage", "users")
CHURN_METRICS = ("roc_auc", "roc_auc_recently_active", "log_loss", "brier", "calibration_error")
HIDDEN_PARAMS = frozenset({"training_cutoffs", "features"})


def models_page(sources: Sources) -> dict[str, Any]:
    """Every stored model by kind, newest first, with its metrics and promotion story."""
    with sources.handlers.db.reader() as session:
        records = analytics.models(session)
    by_kind: dict[str, list[analytics.ModelRecord]] = {}
    for record in records:
        by_kind.setdefault(record.kind, []).append(record)
    views = {kind: [_model_view(r, rows) for r in rows] for kind, rows in by_kind.items()}
    return {
        "recommenders": views.get(model_store.RECOMMENDER, []),
        "churn_models": views.get(model_store.CHURN, []),
        "recommender_metrics": RECOMMENDER_METRICS,
        "churn_metrics": CHURN_METRICS,
        "counts": ("users",),
        "serving_model": sources.handlers.engine.snapshot.model_version,
    }


def _model_view(record: analytics.ModelRecord, kind_rows: list[analytics.ModelRecord]) -> ModelView:
    metrics = record.metrics
    if record.kind == model_store.RECOMMENDER:
        why = str(metrics.get("decision") or "no promotion decision recorded")
        held = metrics.get("holdout") or {}
        holdout = ""
        if held:
            holdout = f"{held.get('test_pairs', 0):,} pairs of {held.get('users', 0):,} users"
        k = int((metrics.get("model") or {}).get("k", 10))
        offline = [
            (f"this model (@{k})", metrics.get("model")),
            ("trending baseline", metrics.get("trending")),
            ("model active then", metrics.get("active")),
        ]
    else:
        why = "activated when trained: churn models are not gated"
        rows = metrics.get("evaluation_rows")
        holdout = f"{rows:,} users at a later cut-off" if isinstance(rows, int) else ""
        offline = [("this model", metrics), ("recency baseline", metrics.get("baseline"))]
    if record.status == model_store.RETIRED:
        successor = _successor(record, kind_rows)
        why += (
            f"; retired when {successor.version} was activated"
            if successor is not None
            else "; retired"
        )
    params = [(k, v) for k, v in sorted(record.params.items()) if k not in HIDDEN_PARAMS]
    return ModelView(record, why, [(n, m) for n, m in offline if m], params, holdout)


def _successor(
    record: analytics.ModelRecord, kind_rows: list[analytics.ModelRecord]
) -> analytics.ModelRecord | None:
    """The model of the same kind activated next after ``record`` was."""
    if record.activated_at is None:
        return None
    activated = record.activated_at
    later = [r for r in kind_rows if r.activated_at is not None and r.activated_at > activated]
    return min(later, key=lambda r: r.activated_at or activated, default=None)
