"""Online metrics of served lists read from the database (the hook for exporters)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from recgrpc.db import training_data as td
from recgrpc.model.evaluation import OnlineMetrics, online_metrics


def online_metrics_since(
    session: Session, since: datetime, window: timedelta = timedelta(hours=24)
) -> list[OnlineMetrics]:
    """``online_metrics`` over lists served since ``since`` (three bulk reads).

    The hook for exporters (e.g. Prometheus gauges refreshed periodically): labels are the
    algorithm and model version, both bounded.
    """
    return online_metrics(
        td.impressions_since(session, since),
        td.feedback_since(session, since),
        td.interactions_since(session, since),
        window=window,
    )
