"""Row shapes shared by every writer: the ``interactions`` and ``feedback`` rows of domain
objects, and the Core table behind an ORM model."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Table

from recgrpc import domain
from recgrpc.db import models as m


def table_of(model: type[m.Base]) -> Table:
    """The Core table behind ``model`` (Core inserts skip the ORM's bulk bookkeeping)."""
    return m.Base.metadata.tables[model.__tablename__]


INTERACTION_COLUMNS = (
    "event_id", "user_id", "item_id", "type", "value", "content_type", "platform", "metadata",
    "recset_id", "occurred_at", "received_at",
)  # fmt: skip
"""The columns ``interaction_row`` fills."""


def interaction_row(event: domain.Interaction, now: datetime) -> dict[str, Any]:
    """The ``interactions`` row for an event received at ``now``."""
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "type": event.type.value,
        "value": event.value,
        "content_type": event.content_type,
        "platform": event.platform,
        "metadata": dict(event.metadata),
        "recset_id": event.recset_id,
        "occurred_at": event.occurred_at,
        "received_at": now,
    }


FEEDBACK_COLUMNS = (
    "feedback_id", "recset_id", "user_id", "item_id", "clicked", "dismissed", "rating",
    "created_at",
)  # fmt: skip
"""The columns ``feedback_row`` fills."""


def feedback_row(feedback: domain.Feedback, at: datetime) -> dict[str, Any]:
    """The ``feedback`` row for feedback given at ``at`` (a new ``feedback_id`` if it has none)."""
    return {
        "feedback_id": feedback.feedback_id or str(uuid.uuid4()),
        "recset_id": feedback.recset_id,
        "user_id": feedback.user_id,
        "item_id": feedback.item_id,
        "clicked": feedback.clicked,
        "dismissed": feedback.dismissed,
        "rating": feedback.rating,
        "created_at": at,
    }
