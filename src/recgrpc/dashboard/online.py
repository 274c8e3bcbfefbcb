"""Online metrics per day: the project's ``online_metrics`` run on each day's served lists.

Each day gets only the feedback on its own lists and the events of its own users up to the end of
the hit window, so a month of days costs about one pass over the rows rather than one per day.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from recgrpc.model.evaluation import OnlineMetrics, online_metrics

ImpressionRow = tuple[str, str, str, str, list[str], datetime]
FeedbackRow = tuple[str, str, str, bool, bool]
EventRow = tuple[str, str, str, datetime]

DAY = timedelta(days=1)


def day_of(at: datetime) -> datetime:
    """Midnight UTC of ``at``'s day."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


@dataclass(frozen=True)
class DailyOnlineMetrics:
    day: datetime
    groups: Sequence[OnlineMetrics]


def online_metrics_by_day(
    impressions: Iterable[ImpressionRow],
    feedback: Iterable[FeedbackRow],
    interactions: Iterable[EventRow],
    window: timedelta,
) -> list[DailyOnlineMetrics]:
    """``online_metrics`` per UTC day of serving, oldest day first (days without lists absent)."""
    lists_by_day: dict[datetime, list[ImpressionRow]] = defaultdict(list)
    for served in impressions:
        lists_by_day[day_of(served[5])].append(served)
    feedback_by_list: dict[str, list[FeedbackRow]] = defaultdict(list)
    for given in feedback:
        feedback_by_list[given[0]].append(given)
    # Events grouped by user in time order, for slicing by day.
    events_by_user: dict[str, list[EventRow]] = defaultdict(list)
    for event in interactions:
        events_by_user[event[0]].append(event)
    times_by_user: dict[str, list[datetime]] = {}
    for user_id, history in events_by_user.items():
        history.sort(key=lambda e: e[3])
        times_by_user[user_id] = [e[3] for e in history]
    out = []
    for day in sorted(lists_by_day):
        lists = lists_by_day[day]
        end = day + DAY + window
        events: list[EventRow] = []
        for user_id in {row[1] for row in lists}:
            known = times_by_user.get(user_id)
            if known:
                lo, hi = bisect.bisect_left(known, day), bisect.bisect_right(known, end)
                events.extend(events_by_user[user_id][lo:hi])
        clicks = [f for row in lists for f in feedback_by_list.get(row[0], ())]
        out.append(DailyOnlineMetrics(day, online_metrics(lists, clicks, events, window)))
    return out


def combined(days: Iterable[DailyOnlineMetrics]) -> list[OnlineMetrics]:
    """The days' metrics added up per (algorithm, model version): every list is in one day."""
    totals: dict[tuple[str, str], list[int]] = {}
    for day in days:
        for g in day.groups:
            counts = totals.setdefault((g.algorithm, g.model_version), [0, 0, 0, 0])
            for n, value in enumerate((g.impressions, g.items_shown, g.clicks, g.hits)):
                counts[n] += value
    return [OnlineMetrics(a, v, *counts) for (a, v), counts in sorted(totals.items())]
