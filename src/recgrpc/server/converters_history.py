"""Proto <-> domain conversion for SearchItems, GetUserStats, ListInteractions and
ListChurnPredictions, validated like the other requests (every violation at once)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from recgrpc import domain, validation
from recgrpc.db.user_history import EventRow, PredictionRow, UserNumbers
from recgrpc.server.converters import _INTERACTION_TYPES, _RISK_LEVELS, _Checker, _timestamp
from recgrpc.server.history_queries import HistoryQuery, Page
from recgrpc.server.search_items import SearchQuery, SearchResult
from recgrpc.v1 import recommendation_pb2 as pb

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_LAST_DAYS = 100 * 366
_TYPE_NUMBERS = {kind: number for number, kind in _INTERACTION_TYPES.items()}
_LEVELS = {level.value: number for level, number in _RISK_LEVELS.items()}


def search_query(request: pb.SearchItemsRequest, default_limit: int, max_limit: int) -> SearchQuery:
    check = _Checker()
    check.problem("query", validation.search_query_problem(request.query))
    if request.limit < 0:
        check.add("limit", "must not be negative (0 means the default)")
    limit = default_limit if request.limit == 0 else min(request.limit, max_limit)
    user_id = check.identifier("user_id", request.user_id, required=False)
    if request.exclude_seen and not user_id:
        check.add("exclude_seen", "needs user_id (whose seen items to leave out)")
    categories = check.identifiers("categories", request.categories, validation.MAX_LABELS)
    platform = check.text("platform", request.platform)
    check.raise_if_any()
    return SearchQuery(
        text=request.query.strip(),
        limit=max(1, limit),
        user_id=user_id,
        categories=frozenset(categories),
        exclude_seen=request.exclude_seen,
        platform=platform,
    )


def search_response(result: SearchResult) -> pb.SearchItemsResponse:
    return pb.SearchItemsResponse(
        recset_id=result.recset_id,
        items=[
            pb.SearchHit(
                item_id=hit.item_id,
                score=hit.score,
                rank=rank,
                reason=hit.reason,
                title=hit.title,
                categories=hit.categories,
            )
            for rank, hit in enumerate(result.hits, start=1)
        ],
        fallback_reason=result.fallback_reason,
        model_version=result.model_version,
        generated_at=_timestamp(result.generated_at),
    )


def user_id_of(request: pb.GetUserStatsRequest) -> str:
    check = _Checker()
    user_id = check.identifier("user_id", request.user_id)
    check.raise_if_any()
    return user_id


def user_stats_response(user_id: str, numbers: UserNumbers) -> pb.GetUserStatsResponse:
    counts = [
        pb.InteractionCount(type=_TYPE_NUMBERS[domain.InteractionType(kind)], count=count)
        for kind, count in sorted(numbers.interactions.items())
        if kind in domain.InteractionType.__members__
    ]
    shown = numbers.items_shown
    reply = pb.GetUserStatsResponse(
        user_id=user_id,
        lists_served=numbers.lists_served,
        items_shown=shown,
        items_clicked=numbers.items_clicked,
        items_dismissed=numbers.items_dismissed,
        click_through_rate=numbers.items_clicked / shown if shown else 0.0,
        interactions=counts,
        total_interactions=sum(numbers.interactions.values()),
    )
    if numbers.first_activity is not None:
        reply.first_activity.CopyFrom(_timestamp(numbers.first_activity))
    if numbers.last_activity is not None:
        reply.last_activity.CopyFrom(_timestamp(numbers.last_activity))
    if numbers.churn_risk is not None:
        reply.churn_risk = numbers.churn_risk
        reply.risk_level = _LEVELS.get(numbers.churn_level, pb.RISK_LEVEL_UNSPECIFIED)
    if numbers.churn_predicted_at is not None:
        reply.churn_predicted_at.CopyFrom(_timestamp(numbers.churn_predicted_at))
    return reply


def _page_size(check: _Checker, value: int) -> int:
    if value < 0:
        check.add("page_size", "must not be negative (0 means 50)")
    elif value > MAX_PAGE_SIZE:
        check.add("page_size", f"must be at most {MAX_PAGE_SIZE}")
    return value or DEFAULT_PAGE_SIZE


def _page_token(check: _Checker, value: str) -> str:
    if len(value) > 512 or (value and not value.isascii()):
        check.add("page_token", "is not a page token this server issued")
    return value


def interactions_request(request: pb.ListInteractionsRequest, now: datetime) -> HistoryQuery:
    check = _Checker()
    user_id = check.identifier("user_id", request.user_id)
    page_size = _page_size(check, request.page_size)
    token = _page_token(check, request.page_token)
    since = None
    if request.HasField("since"):
        since = check.timestamp("since", request.since, now)
    if not 0 <= request.last_days <= MAX_LAST_DAYS:
        check.add("last_days", f"must be within 0..{MAX_LAST_DAYS} (0: no limit)")
    elif request.last_days and request.HasField("since"):
        check.add("last_days", "give since or last_days, not both")
    if len(request.types) > len(_INTERACTION_TYPES):
        check.add("types", f"must have at most {len(_INTERACTION_TYPES)} entries")
    names: list[str] = []
    for i, number in enumerate(request.types[: len(_INTERACTION_TYPES) + 1]):
        kind = _INTERACTION_TYPES.get(number)
        if kind is None:
            check.add(f"types[{i}]", "must be a known interaction type other than UNSPECIFIED")
        else:
            names.append(kind.value)
    check.raise_if_any()
    return HistoryQuery(
        user_id=user_id,
        page_size=page_size,
        page_token=token,
        since=since,
        last_days=request.last_days,
        types=sorted(set(names)),
    )


def interactions_response(page: Page[EventRow]) -> pb.ListInteractionsResponse:
    return pb.ListInteractionsResponse(
        interactions=[_event(row) for row in page.rows], next_page_token=page.next_page_token
    )


def _event(row: EventRow) -> pb.InteractionRecord:
    kind = _TYPE_NUMBERS.get(domain.InteractionType(row.type)) if row.type in _NAMES else None
    return pb.InteractionRecord(
        event_id=row.event_id,
        item_id=row.item_id,
        type=kind or pb.INTERACTION_TYPE_UNSPECIFIED,
        value=row.value,
        content_type=row.content_type,
        platform=row.platform,
        metadata=row.metadata,
        recset_id=row.recset_id,
        occurred_at=_timestamp(row.occurred_at),
    )


_NAMES = frozenset(domain.InteractionType.__members__)


def churn_history_request(request: pb.ListChurnPredictionsRequest) -> tuple[str, int, str]:
    check = _Checker()
    user_id = check.identifier("user_id", request.user_id)
    page_size = _page_size(check, request.page_size)
    token = _page_token(check, request.page_token)
    check.raise_if_any()
    return user_id, page_size, token


def churn_history_response(page: Page[PredictionRow]) -> pb.ListChurnPredictionsResponse:
    return pb.ListChurnPredictionsResponse(
        predictions=[_prediction(row) for row in page.rows],
        next_page_token=page.next_page_token,
    )


def _prediction(row: PredictionRow) -> pb.StoredChurnPrediction:
    return pb.StoredChurnPrediction(
        churn_risk=row.risk,
        risk_level=_LEVELS.get(row.level, pb.RISK_LEVEL_UNSPECIFIED),
        factors=_factors(row.factors),
        model_version=row.model_version,
        predicted_at=_timestamp(row.predicted_at),
        as_of=_timestamp(row.as_of),
        horizon_days=row.horizon_days,
    )


def _factors(stored: Sequence[dict[str, object]]) -> list[pb.ChurnFactor]:
    out = []
    for factor in stored:
        value, contribution = factor.get("value", 0.0), factor.get("contribution", 0.0)
        out.append(
            pb.ChurnFactor(
                name=str(factor.get("name", "")),
                value=float(value) if isinstance(value, int | float) else 0.0,
                contribution=float(contribution) if isinstance(contribution, int | float) else 0.0,
            )
        )
    return out
