"""The search and history methods of both clients (SearchItems, GetUserStats, ListInteractions,
ListChurnPredictions), mixed into ``RecommendationClient`` and ``AsyncRecommendationClient``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from recgrpc.client import _history_convert as calls
from recgrpc.client._calls import AsyncSender, SyncSender
from recgrpc.client._channel import Metadata
from recgrpc.client._history_types import (
    ChurnPredictionPage,
    InteractionPage,
    SearchResults,
    UserStats,
)
from recgrpc.client._types import InteractionLogged, InteractionType


class SyncHistoryCalls(SyncSender):
    """Search and history methods of :class:`RecommendationClient`."""

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
        call = calls.search_items(
            query, limit=limit, user_id=user_id, categories=categories,
            exclude_seen=exclude_seen, platform=platform,
        )  # fmt: skip
        return self._send(call, timeout, call_metadata)

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
        call = calls.log_search(
            user_id, query, event_id=event_id, platform=platform, occurred_at=occurred_at
        )
        return self._send(call, timeout, call_metadata)

    def get_user_stats(
        self, user_id: str, *, timeout: float | None = None, call_metadata: Metadata | None = None
    ) -> UserStats:
        """A user's numbers; ``NotFoundError`` for a user the service has never seen."""
        return self._send(calls.user_stats(user_id), timeout, call_metadata)

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
        call = calls.list_interactions(
            user_id, page_size=page_size, page_token=page_token, since=since,
            last_days=last_days, types=types,
        )  # fmt: skip
        return self._send(call, timeout, call_metadata)

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
        call = calls.list_churn_predictions(user_id, page_size=page_size, page_token=page_token)
        return self._send(call, timeout, call_metadata)


class AsyncHistoryCalls(AsyncSender):
    """Search and history methods of :class:`AsyncRecommendationClient` (same arguments)."""

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
        call = calls.search_items(
            query, limit=limit, user_id=user_id, categories=categories,
            exclude_seen=exclude_seen, platform=platform,
        )  # fmt: skip
        return await self._send(call, timeout, call_metadata)

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
        call = calls.log_search(
            user_id, query, event_id=event_id, platform=platform, occurred_at=occurred_at
        )
        return await self._send(call, timeout, call_metadata)

    async def get_user_stats(
        self, user_id: str, *, timeout: float | None = None, call_metadata: Metadata | None = None
    ) -> UserStats:
        """See :meth:`RecommendationClient.get_user_stats`."""
        return await self._send(calls.user_stats(user_id), timeout, call_metadata)

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
        call = calls.list_interactions(
            user_id, page_size=page_size, page_token=page_token, since=since,
            last_days=last_days, types=types,
        )  # fmt: skip
        return await self._send(call, timeout, call_metadata)

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
        call = calls.list_churn_predictions(user_id, page_size=page_size, page_token=page_token)
        return await self._send(call, timeout, call_metadata)
