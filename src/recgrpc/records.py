"""Plain records that storage (``db/``) reads and the pure ML code (``model/``) consumes.

They sit outside both packages so that ``model/`` needs no SQL to be used or tested, and ``db/``
needs no numpy model code: a training job reads them with ``db`` and hands them to ``model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class TrainingRows:
    """Everything recommender training reads from the database, as plain tuples."""

    items: list[tuple[str, list[str], list[str], datetime]]
    """(item_id, categories, tags, created_at) of the active items"""
    users: list[tuple[str, dict[str, str]]]
    preferences: list[tuple[str, str, float]]
    interactions: list[tuple[str, str, str, float, datetime]]
    """(user_id, item_id, type, value, occurred_at)"""
    feedback: list[tuple[str, str, bool, bool, float | None, datetime]]
    """(user_id, item_id, clicked, dismissed, rating, created_at)"""


@dataclass(frozen=True, slots=True)
class ActivityAggregates:
    """One user's interaction counts as of a time (events at or before it only)."""

    first_event_at: datetime
    last_event_at: datetime
    events_7d: int
    events_28d: int
    events_30d: int
    events_90d: int
    active_days_30d: int


@dataclass(frozen=True, slots=True)
class FeedbackAggregates:
    """Feedback on recommendations in the windows before a time."""

    feedback_30d: int = 0
    clicks_30d: int = 0
    dismissals_30d: int = 0
    ratings_90d: int = 0
    rating_sum_90d: float = 0.0


@dataclass(frozen=True, slots=True)
class UserAggregates:
    """Everything the churn features are computed from, for one user as of one time."""

    activity: ActivityAggregates
    feedback: FeedbackAggregates
    impressions_30d: int
    preferences: int
