"""The user and item inspectors: one user's or item's data, and what the service would do now.

Recommendations come from ``Handlers.preview_recommendations`` (GetRecommendations' own path,
without storing an impression); churn risk from the server's churn predictor (PredictChurn's,
without recording the prediction). Unknown or malformed ids give a message, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from recgrpc import domain, validation
from recgrpc.dashboard import charts
from recgrpc.dashboard.online import DAY, day_of
from recgrpc.dashboard.sources import Sources
from recgrpc.db import analytics
from recgrpc.errors import InvalidArgument, NotFound, ServiceError
from recgrpc.model.ranking import TRENDING_REASON
from recgrpc.model.rerank import FRESH_REASON
from recgrpc.server.converters import recommendation_query
from recgrpc.v1 import recommendation_pb2 as pb

HISTORY_ROWS = 20
SIMILAR_TO_LAST = 3
NEIGHBOURS = 10
POPULARITY_DAYS = 90
ALGORITHMS = ("AUTO", "HYBRID", "COLLABORATIVE", "CONTENT", "POPULAR")
WHY = {
    "hybrid": "matches the user's history and profile (identity + features)",
    "collaborative": "liked by users with similar behaviour",
    "content": "matches the categories and tags the user is drawn to",
    TRENDING_REASON: "popular recently (time-decayed events)",
    FRESH_REASON: "a new item lifted by the freshness boost",
}


@dataclass(frozen=True)
class Recommended:
    rank: int
    item: domain.ScoredItem
    title: str
    categories: list[str]
    why: str


@dataclass(frozen=True)
class Neighbours:
    title: str
    items: list[tuple[domain.ScoredItem, str]]
    """(neighbour, its title)."""
    problem: str = ""


def _id_problem(name: str, value: str) -> str:
    problem = validation.identifier_problem(value)
    return f"{name} {problem}" if problem else ""


def user_page(sources: Sources, user_id: str, algorithm: str, limit: int) -> dict[str, Any]:
    """Everything about one user; ``found`` is False (with ``message``) for an unknown id."""
    handlers = sources.handlers
    page: dict[str, Any] = {
        "user_id": user_id,
        "algorithm": algorithm,
        "limit": limit,
        "algorithms": ALGORITHMS,
        "max_limit": handlers.settings.max_limit,
        "found": False,
        "message": "",
    }
    if not user_id:
        return page
    problem = _id_problem("A user id", user_id)
    if problem:
        return {**page, "message": problem, "status": 400}
    now = sources.now()
    with handlers.db.reader() as session:
        user = analytics.user_record(session, user_id)
        if user is None:
            return {
                **page,
                "message": f"No user {user_id!r} is known: no profile, preferences or history.",
                "status": 404,
            }
        history = analytics.recent_history(session, user_id, HISTORY_ROWS)
        churn, churn_problem = _churn(sources, session, user_id, now)
    request = pb.GetRecommendationsRequest(
        user_id=user_id, limit=limit, algorithm=pb.Algorithm.Value(f"ALGORITHM_{algorithm}")
    )
    try:  # the RPC's own conversion: the same limits and checks
        query = recommendation_query(
            request, handlers.settings.default_limit, handlers.settings.max_limit
        )
    except InvalidArgument as exc:
        return {**page, "message": exc.message, "status": 400}
    ranking = handlers.preview_recommendations(query)
    caps = sources.capabilities
    similar: list[Neighbours] = []
    if caps.similar_items is not None:
        recent = list(dict.fromkeys(h.item_id for h in history))[:SIMILAR_TO_LAST]
        mode = caps.neighbour_modes[0]
        similar = [_neighbours(sources, f"Similar to {i}", i, mode) for i in recent]
    stats = None if caps.user_stats is None else caps.user_stats(user_id)
    with handlers.db.reader() as session:
        items = analytics.item_records(
            session, [s.item_id for s in ranking.items] + [h.item_id for h in history]
        )
    recommended = [
        Recommended(
            n,
            s,
            _title(items, s.item_id),
            _categories(items, s.item_id),
            WHY.get(s.reason, s.reason),
        )
        for n, s in enumerate(ranking.items, start=1)
    ]
    return {
        **page,
        "found": True,
        "user": user,
        "history": [(h, _title(items, h.item_id)) for h in history],
        "ranking": ranking,
        "recommended": recommended,
        "churn": churn,
        "churn_problem": churn_problem,
        "similar": similar,
        "has_similar": caps.similar_items is not None,
        "stats": stats,
        "now": now,
    }


def _churn(
    sources: Sources, session: Any, user_id: str, now: Any
) -> tuple[domain.ChurnPrediction | None, str]:
    predictor = sources.handlers.churn
    if predictor is None:
        return None, "this server has no churn predictor"
    try:
        return predictor.predict(session, user_id, now), ""
    except NotFound:
        return None, "no recorded activity: nothing to score"
    except ServiceError as exc:  # Unavailable: no churn model trained yet
        return None, exc.message


def _neighbours(sources: Sources, title: str, item_id: str, mode: str) -> Neighbours:
    finder = sources.capabilities.similar_items
    assert finder is not None
    try:
        found = list(finder(item_id, mode, NEIGHBOURS))
    except ServiceError as exc:
        return Neighbours(title, [], exc.message)
    with sources.handlers.db.reader() as session:
        items = analytics.item_records(session, [s.item_id for s in found])
    return Neighbours(title, [(s, _title(items, s.item_id)) for s in found])


def _title(items: dict[str, analytics.ItemRecord], item_id: str) -> str:
    record = items.get(item_id)
    return record.title if record is not None else ""


def _categories(items: dict[str, analytics.ItemRecord], item_id: str) -> list[str]:
    record = items.get(item_id)
    return record.categories if record is not None else []


def item_page(sources: Sources, item_id: str) -> dict[str, Any]:
    """One item: metadata, events per day, trending rank now, neighbours when available."""
    page: dict[str, Any] = {"item_id": item_id, "found": False, "message": ""}
    if not item_id:
        return page
    problem = _id_problem("An item id", item_id)
    if problem:
        return {**page, "message": problem, "status": 400}
    now = sources.now()
    since = day_of(now) - DAY * (POPULARITY_DAYS - 1)
    with sources.handlers.db.reader() as session:
        record = analytics.item_records(session, [item_id]).get(item_id)
        if record is None:
            return {**page, "message": f"No item {item_id!r} is in the catalogue.", "status": 404}
        per_day = analytics.item_events_per_day(session, item_id, since)
        by_type = analytics.item_totals(session, item_id)
    days = [since + DAY * d for d in range(POPULARITY_DAYS)]
    daily = {day: 0 for day in days}
    for (day, _kind), n in per_day.items():
        daily[day] = daily.get(day, 0) + n
    chart = charts.bar_chart(
        f"Events per day, last {POPULARITY_DAYS} days (UTC)",
        [(f"{day:%b %d}", float(daily[day])) for day in days],
        label_every=14,
    )
    caps = sources.capabilities
    neighbours = []
    if caps.similar_items is not None:
        for mode in caps.neighbour_modes:
            neighbours.append(_neighbours(sources, f"Neighbours by {mode}", item_id, mode))
    return {
        **page,
        "found": True,
        "item": record,
        "popularity_chart": chart,
        "events_in_chart": sum(daily.values()),
        "by_type": by_type,
        "total_events": sum(n for _, n in by_type),
        "trending": _trending_rank(sources, item_id),
        "neighbours": neighbours,
        "has_neighbours": caps.similar_items is not None,
        "window": timedelta(days=POPULARITY_DAYS),
    }


def _trending_rank(sources: Sources, item_id: str) -> tuple[int, int] | None:
    """(rank, catalogue size) of the item in the serving snapshot's trending scores."""
    snapshot = sources.handlers.engine.snapshot
    position = snapshot.catalog.position.get(item_id)
    if position is None or snapshot.trending.size == 0:
        return None
    score = snapshot.trending[position]
    return int(np.count_nonzero(snapshot.trending > score)) + 1, int(snapshot.trending.size)
