"""Search and history calls for both clients: each builds its request from the method's
arguments and says how to turn the reply into the client's result types."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from recgrpc.client import _convert
from recgrpc.client._calls import Call
from recgrpc.client._history_types import (
    ChurnPredictionPage,
    InteractionPage,
    InteractionRecord,
    SearchHit,
    SearchResults,
    StoredChurnPrediction,
    UserStats,
)
from recgrpc.client._types import ChurnFactor, InteractionLogged, InteractionType, RiskLevel
from recgrpc.v1 import recommendation_pb2 as pb

_TYPES = {
    pb.InteractionType.Value("INTERACTION_TYPE_" + kind.value): kind for kind in InteractionType
}
_LEVELS = {pb.RiskLevel.Value("RISK_LEVEL_" + level.value): level for level in RiskLevel}


def _time(message: Any, name: str) -> datetime | None:
    return message.__getattribute__(name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def search_items(
    query: str,
    *,
    limit: int,
    user_id: str,
    categories: Iterable[str],
    exclude_seen: bool,
    platform: str,
) -> Call[SearchResults]:
    request = _convert._message(
        pb.SearchItemsRequest,
        query=query,
        limit=limit,
        user_id=user_id,
        categories=_convert._strings("categories", categories),
        exclude_seen=exclude_seen,
        platform=platform,
    )
    return Call("SearchItems", request, _search_results)


def _search_results(reply: pb.SearchItemsResponse) -> SearchResults:
    return SearchResults(
        recset_id=reply.recset_id,
        items=tuple(
            SearchHit(h.item_id, h.score, h.rank, h.reason, h.title, tuple(h.categories))
            for h in reply.items
        ),
        fallback_reason=reply.fallback_reason,
        model_version=reply.model_version,
        generated_at=reply.generated_at.ToDatetime(tzinfo=UTC),
    )


def log_search(
    user_id: str, query: str, *, event_id: str | None, platform: str, occurred_at: datetime | None
) -> Call[InteractionLogged]:
    request = _convert.interaction_request(
        user_id, "", InteractionType.SEARCH, value=0.0, event_id=event_id, content_type="",
        platform=platform, metadata={"query": query}, occurred_at=occurred_at, recset_id="",
    )  # fmt: skip
    return Call("LogInteraction", request, _convert.interaction_logged)


def user_stats(user_id: str) -> Call[UserStats]:
    return Call(
        "GetUserStats", _convert._message(pb.GetUserStatsRequest, user_id=user_id), _user_stats
    )


def _user_stats(reply: pb.GetUserStatsResponse) -> UserStats:
    predicted = reply.HasField("churn_risk")
    return UserStats(
        user_id=reply.user_id,
        lists_served=reply.lists_served,
        items_shown=reply.items_shown,
        items_clicked=reply.items_clicked,
        items_dismissed=reply.items_dismissed,
        click_through_rate=reply.click_through_rate,
        interactions={_TYPES[c.type]: c.count for c in reply.interactions if c.type in _TYPES},
        total_interactions=reply.total_interactions,
        first_activity=_time(reply, "first_activity"),
        last_activity=_time(reply, "last_activity"),
        churn_risk=reply.churn_risk if predicted else None,
        risk_level=_LEVELS.get(reply.risk_level) if predicted else None,
        churn_predicted_at=_time(reply, "churn_predicted_at"),
    )


def list_interactions(
    user_id: str,
    *,
    page_size: int,
    page_token: str,
    since: datetime | None,
    last_days: int,
    types: Iterable[InteractionType | str],
) -> Call[InteractionPage]:
    numbers = [
        _convert._INTERACTION_TYPE_NUMBERS[_convert._enum("types", InteractionType, t)]
        for t in _convert._strings("types", types)
    ]
    request = _convert._message(
        pb.ListInteractionsRequest,
        user_id=user_id,
        page_size=page_size,
        page_token=page_token,
        last_days=last_days,
        types=numbers,
    )
    if since is not None:
        request.since.CopyFrom(_convert._timestamp("since", since))
    return Call("ListInteractions", request, _interaction_page)


def _interaction_page(reply: pb.ListInteractionsResponse) -> InteractionPage:
    return InteractionPage(
        interactions=tuple(
            InteractionRecord(
                event_id=e.event_id,
                item_id=e.item_id,
                type=_TYPES.get(e.type),
                value=e.value,
                content_type=e.content_type,
                platform=e.platform,
                metadata=dict(e.metadata),
                recset_id=e.recset_id,
                occurred_at=e.occurred_at.ToDatetime(tzinfo=UTC),
            )
            for e in reply.interactions
        ),
        next_page_token=reply.next_page_token,
    )


def list_churn_predictions(
    user_id: str, *, page_size: int, page_token: str
) -> Call[ChurnPredictionPage]:
    request = _convert._message(
        pb.ListChurnPredictionsRequest,
        user_id=user_id,
        page_size=page_size,
        page_token=page_token,
    )
    return Call("ListChurnPredictions", request, _prediction_page)


def _prediction_page(reply: pb.ListChurnPredictionsResponse) -> ChurnPredictionPage:
    return ChurnPredictionPage(
        predictions=tuple(
            StoredChurnPrediction(
                risk=p.churn_risk,
                level=_LEVELS.get(p.risk_level),
                factors=tuple(ChurnFactor(f.name, f.value, f.contribution) for f in p.factors),
                model_version=p.model_version,
                predicted_at=p.predicted_at.ToDatetime(tzinfo=UTC),
                as_of=p.as_of.ToDatetime(tzinfo=UTC),
                horizon_days=p.horizon_days,
            )
            for p in reply.predictions
        ),
        next_page_token=reply.next_page_token,
    )
