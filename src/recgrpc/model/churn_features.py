"""Churn features (DESIGN.md §5): one user's feature vector from their aggregates as of a time.

A user *churns* at ``as_of`` when they have no interaction in ``(as_of, as_of + horizon_days]``.
:func:`feature_table` is the one function that turns aggregates into features, used by training
(every user at a cut-off) and by serving (one user), so the two cannot drift apart. The
aggregates themselves are read by ``db.churn_data``; this module does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from recgrpc.records import UserAggregates

FloatArray = npt.NDArray[np.float64]

FEATURE_NAMES: tuple[str, ...] = (
    "days_since_last_event",
    "silence_vs_usual_gap",
    "tenure_days",
    "events_7d",
    "events_30d",
    "events_90d",
    "trend_7d_vs_prev_3w",
    "trend_30d_vs_prev_60d",
    "active_days_30d",
    "impressions_30d",
    "click_through_rate_30d",
    "dismiss_rate_30d",
    "feedback_30d",
    "mean_rating_90d",
    "preferences",
)
"""Feature order in matrices and artifacts."""

# How each feature may move the risk, other features equal (+1 raises it, -1 lowers it, 0 free).
# The trees are held to these directions: they regularise small histories and keep the
# explanations plausible (a longer silence never lowers the risk).
MONOTONE_EFFECT: dict[str, int] = {
    "days_since_last_event": 1,
    "silence_vs_usual_gap": 1,
    "tenure_days": 0,
    "events_7d": -1,
    "events_30d": -1,
    "events_90d": 0,
    "trend_7d_vs_prev_3w": -1,
    "trend_30d_vs_prev_60d": -1,
    "active_days_30d": -1,
    "impressions_30d": 0,
    "click_through_rate_30d": -1,
    "dismiss_rate_30d": 1,
    "feedback_30d": 0,
    "mean_rating_90d": -1,
    "preferences": 0,
}

DAY_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class FeatureTable:
    """Feature rows as of one time: ``values[i]`` belongs to ``user_ids[i]``.

    Undefined rates (no exposure, no ratings) are NaN: the trees route missing values on a
    branch of their own, learned in training.
    """

    as_of: datetime
    user_ids: tuple[str, ...]
    values: FloatArray

    def row(self, user_id: str) -> FloatArray:
        row: FloatArray = self.values[self.user_ids.index(user_id)]
        return row


def features_from_aggregates(agg: UserAggregates, as_of: datetime) -> list[float]:
    """One user's feature vector (order of ``FEATURE_NAMES``) from their aggregates."""
    act = agg.activity
    fb = agg.feedback
    prev_3w_weekly = (act.events_28d - act.events_7d) / 3.0
    prev_60d_monthly = (act.events_90d - act.events_30d) / 2.0
    exposure = max(agg.impressions_30d, fb.feedback_30d)
    nan = math.nan
    silence = max((as_of - act.last_event_at).total_seconds(), 0.0) / DAY_SECONDS
    tenure = max((as_of - act.first_event_at).total_seconds(), 0.0) / DAY_SECONDS
    # A week's silence is alarming from a daily user and normal from one who visits monthly:
    # the silence against the user's own mean gap between events over the last 90 days.
    usual_gap = min(tenure, 90.0) / max(act.events_90d, 1)
    return [
        silence,
        math.log((silence + 1.0) / (usual_gap + 1.0)),
        tenure,
        float(act.events_7d),
        float(act.events_30d),
        float(act.events_90d),
        math.log((act.events_7d + 1.0) / (prev_3w_weekly + 1.0)),
        math.log((act.events_30d + 1.0) / (prev_60d_monthly + 1.0)),
        float(act.active_days_30d),
        float(agg.impressions_30d),
        # Impressions are served lists; without them (imported feedback) each feedback row
        # stands for one item shown.
        fb.clicks_30d / exposure if exposure else nan,
        fb.dismissals_30d / fb.feedback_30d if fb.feedback_30d else nan,
        float(fb.feedback_30d),
        fb.rating_sum_90d / fb.ratings_90d if fb.ratings_90d else nan,
        # Preferences keep no history: past cut-offs see today's count.
        float(agg.preferences),
    ]


def feature_table(aggregates: Mapping[str, UserAggregates], as_of: datetime) -> FeatureTable:
    """Features as of ``as_of`` of every user in ``aggregates`` (rows sorted by user id)."""
    ids = tuple(sorted(aggregates))
    values = np.array(
        [features_from_aggregates(aggregates[uid], as_of) for uid in ids], dtype=np.float64
    ).reshape(len(ids), len(FEATURE_NAMES))
    return FeatureTable(as_of=as_of, user_ids=ids, values=values)
