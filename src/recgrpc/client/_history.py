"""Client calls for search and user history (SearchItems, GetUserStats, ListInteractions,
ListChurnPredictions), mixed into both clients: result types, conversions and methods."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recgrpc.client import _convert
from recgrpc.client._channel import Metadata
from recgrpc.client._types import ChurnFactor, InteractionLogged, InteractionType, RiskLevel
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc

_TYPES = {
    pb.InteractionType.Value("INTERACTION_TYPE_" + kind.value): kind for kind in InteractionType
}
_LEVELS = {pb.RiskLevel.Value("RISK_LEVEL_" + level.value): level for level in RiskLevel}


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One item of a search result."""

    item_id: str
    score: float
    rank: int
    reason: str
    """``"search"``, ``"search_personalised"``, or ``"trending"`` when nothing matched."""
    title: str
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchResults:
    """A served search list. ``fallback_reason`` is ``"no_search_matches"`` when nothing
    matched the query and the items are trending ones instead."""

    recset_id: str
    items: tuple[SearchHit, ...]
    fallback_reason: str
    model_version: str
    generated_at: datetime

    @property
    def item_ids(self) -> list[str]:
        return [hit.item_id for hit in self.items]


@dataclass(frozen=True, slots=True)
class UserStats:
    """One user's numbers; the churn fields are ``None`` when no prediction was stored."""

    user_id: str
    lists_served: int
    items_shown: int
    items_clicked: int
    items_dismissed: int
    click_through_rate: float
    interactions: dict[InteractionType, int]
    total_interactions: int
    first_activity: datetime | None
    last_activity: datetime | None
    churn_risk: float | None
    risk_level: RiskLevel | None
    churn_predicted_at: datetime | None


@dataclass(frozen=True, slots=True)
class InteractionRecord:
    """A stored event; ``item_id`` is empty for SEARCH events (the query is in metadata)."""

    event_id: str
    item_id: str
    type: InteractionType | None
    value: float
    content_type: str
    platform: str
    metadata: dict[str, str]
    recset_id: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class StoredChurnPrediction:
    risk: float
    level: RiskLevel | None
    factors: tuple[ChurnFactor, ...]
    model_version: str
    predicted_at: datetime
    as_of: datetime
    horizon_days: int


@dataclass(frozen=True, slots=True)
class InteractionPage:
    """Newest first; pass ``next_page_token`` back for the next page (empty: the last)."""

    interactions: tuple[InteractionRecord, ...]
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class ChurnPredictionPage:
    predictions: tuple[StoredChurnPrediction, ...]
    next_page_token: str = ""


def _time(message: Any, name: str) -> datetime | None:
    return message.__getattribute__(name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def _search_request(
    query: str,
    *,
    limit: int,
    user_id: str,
    categories: Iterable[str],
    exclude_seen: bool,
    platform: str,
) -> pb.SearchItemsRequest:
    return _convert._message(
        pb.SearchItemsRequest,
        query=query,
        limit=limit,
        user_id=user_id,
        categories=_convert._strings("categories", categories),
        exclude_seen=exclude_seen,
        platform=platform,
    )


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


def _search_event(
    user_id: str, query: str, *, event_id: str | None, platform: str, occurred_at: datetime | None
) -> pb.LogInteractionRequest:
    return _convert.interaction_request(
        user_id, "", InteractionType.SEARCH, value=0.0, event_id=event_id, content_type="",
        platform=platform, metadata={"query": query}, occurred_at=occurred_at, recset_id="",
    )  # fmt: skip


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


def _interactions_request(
    user_id: str,
    *,
    page_size: int,
    page_token: str,
    since: datetime | None,
    last_days: int,
    types: Iterable[InteractionType | str],
) -> pb.ListInteractionsRequest:
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
    return request


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


class SyncHistoryCalls:
    """Search and history methods of :class:`RecommendationClient`."""

    _recommendations: recommendation_pb2_grpc.RecommendationServiceStub
    if TYPE_CHECKING:

        def _call(
            self, method: Any, request: Any, timeout: float | None, call_metadata: Metadata | None
        ) -> Any: ...

    def search_items(
        self,
        query: str,
        *,
        limit: int = 0,
        user_id: str = "",
        categories: Iterable[str] = (),
        exclude_seen: bool = False,
        platform: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> SearchResults:
        """Items ranked by relevance to ``query`` (1-255 characters); with ``user_id``,
        re-ranked for that user and recorded as their impression. ``exclude_seen`` leaves out
        what the user already interacted with or dismissed. Nothing matching: trending items
        with ``fallback_reason == "no_search_matches"``."""
        request = _search_request(
            query, limit=limit, user_id=user_id, categories=categories,
            exclude_seen=exclude_seen, platform=platform,
        )  # fmt: skip
        reply = self._call(self._recommendations.SearchItems, request, timeout, call_metadata)
        return _search_results(reply)

    def log_search(
        self,
        user_id: str,
        query: str,
        *,
        event_id: str | None = None,
        platform: str = "",
        occurred_at: datetime | None = None,
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> InteractionLogged:
        """Store a search the user ran (a SEARCH interaction): it shapes their recommendations."""
        request = _search_event(
            user_id, query, event_id=event_id, platform=platform, occurred_at=occurred_at
        )
        reply = self._call(self._recommendations.LogInteraction, request, timeout, call_metadata)
        return _convert.interaction_logged(reply)

    def get_user_stats(
        self, user_id: str, *, timeout: float | None = None, call_metadata: Metadata | None = None
    ) -> UserStats:
        """A user's numbers; ``NotFoundError`` for a user the service has never seen."""
        request = _convert._message(pb.GetUserStatsRequest, user_id=user_id)
        reply = self._call(self._recommendations.GetUserStats, request, timeout, call_metadata)
        return _user_stats(reply)

    def list_interactions(
        self,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        since: datetime | None = None,
        last_days: int = 0,
        types: Iterable[InteractionType | str] = (),
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> InteractionPage:
        """One page (default 50, at most 1000) of the user's events, newest first."""
        request = _interactions_request(
            user_id, page_size=page_size, page_token=page_token, since=since,
            last_days=last_days, types=types,
        )  # fmt: skip
        reply = self._call(self._recommendations.ListInteractions, request, timeout, call_metadata)
        return _interaction_page(reply)

    def list_churn_predictions(
        self,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> ChurnPredictionPage:
        """One page of the user's stored churn predictions, newest first."""
        request = _convert._message(
            pb.ListChurnPredictionsRequest,
            user_id=user_id,
            page_size=page_size,
            page_token=page_token,
        )
        method = self._recommendations.ListChurnPredictions
        return _prediction_page(self._call(method, request, timeout, call_metadata))


class AsyncHistoryCalls:
    """Search and history methods of :class:`AsyncRecommendationClient` (same arguments)."""

    _recommendations: recommendation_pb2_grpc.RecommendationServiceAsyncStub
    if TYPE_CHECKING:

        async def _call(
            self, method: Any, request: Any, timeout: float | None, call_metadata: Metadata | None
        ) -> Any: ...

    async def search_items(
        self,
        query: str,
        *,
        limit: int = 0,
        user_id: str = "",
        categories: Iterable[str] = (),
        exclude_seen: bool = False,
        platform: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> SearchResults:
        """See :meth:`RecommendationClient.search_items`."""
        request = _search_request(
            query, limit=limit, user_id=user_id, categories=categories,
            exclude_seen=exclude_seen, platform=platform,
        )  # fmt: skip
        reply = await self._call(self._recommendations.SearchItems, request, timeout, call_metadata)
        return _search_results(reply)

    async def log_search(
        self,
        user_id: str,
        query: str,
        *,
        event_id: str | None = None,
        platform: str = "",
        occurred_at: datetime | None = None,
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> InteractionLogged:
        """See :meth:`RecommendationClient.log_search`."""
        request = _search_event(
            user_id, query, event_id=event_id, platform=platform, occurred_at=occurred_at
        )
        reply = await self._call(
            self._recommendations.LogInteraction, request, timeout, call_metadata
        )
        return _convert.interaction_logged(reply)

    async def get_user_stats(
        self, user_id: str, *, timeout: float | None = None, call_metadata: Metadata | None = None
    ) -> UserStats:
        """See :meth:`RecommendationClient.get_user_stats`."""
        request = _convert._message(pb.GetUserStatsRequest, user_id=user_id)
        reply = await self._call(
            self._recommendations.GetUserStats, request, timeout, call_metadata
        )
        return _user_stats(reply)

    async def list_interactions(
        self,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        since: datetime | None = None,
        last_days: int = 0,
        types: Iterable[InteractionType | str] = (),
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> InteractionPage:
        """See :meth:`RecommendationClient.list_interactions`."""
        request = _interactions_request(
            user_id, page_size=page_size, page_token=page_token, since=since,
            last_days=last_days, types=types,
        )  # fmt: skip
        reply = await self._call(
            self._recommendations.ListInteractions, request, timeout, call_metadata
        )
        return _interaction_page(reply)

    async def list_churn_predictions(
        self,
        user_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> ChurnPredictionPage:
        """See :meth:`RecommendationClient.list_churn_predictions`."""
        request = _convert._message(
            pb.ListChurnPredictionsRequest,
            user_id=user_id,
            page_size=page_size,
            page_token=page_token,
        )
        method = self._recommendations.ListChurnPredictions
        return _prediction_page(await self._call(method, request, timeout, call_metadata))
