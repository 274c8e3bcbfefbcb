"""The discovery methods of both clients (mixed into ``RecommendationClient`` and
``AsyncRecommendationClient``, which provide the stub and ``_call``); each is a typed shell over
the shared call of ``_discovery_convert``."""

from __future__ import annotations

from collections.abc import Iterable

from recgrpc.client import _discovery_convert as convert
from recgrpc.client._calls import AsyncSender, SyncSender
from recgrpc.client._channel import Metadata
from recgrpc.client._discovery_types import (
    FrequentlyTogether,
    HomeFeed,
    ShelfKind,
    SimilarItems,
    SimilarityMode,
)


class DiscoveryCalls(SyncSender):
    """GetSimilarItems, GetFrequentlyTogether and GetHomeFeed for the blocking client."""

    def similar_items(
        self,
        item_id: str,
        *,
        limit: int = 0,
        mode: SimilarityMode | str = SimilarityMode.AUTO,
        user_id: str = "",
        exclude_item_ids: Iterable[str] = (),
        categories: Iterable[str] = (),
        platform: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> SimilarItems:
        """Items like ``item_id``, best first (``reason`` says which source placed each).

        Args:
            item_id: The item whose neighbours are wanted; NotFoundError when unknown. An
                inactive item still has neighbours (a stale product page).
            limit: Items wanted; 0 means the server's default (10), more than 100 is capped.
            mode: AUTO (blend), BEHAVIOUR, CONTENT or EMBEDDING.
            user_id: When given, leaves out what the user saw or dismissed, lightly re-orders
                the list for them and records it as their impression.
            exclude_item_ids: Items never to return.
            categories: When given, only items in at least one of these categories.
            platform: Where the list is shown, for analytics.
            timeout: Deadline in seconds for this call (default: the client's).
            call_metadata: Extra headers for this call.
        """
        call = convert.similar_items(
            item_id,
            limit=limit,
            mode=mode,
            user_id=user_id,
            exclude_item_ids=exclude_item_ids,
            categories=categories,
            platform=platform,
        )
        return self._send(call, timeout, call_metadata)

    def frequently_together(
        self,
        item_ids: Iterable[str] | str,
        *,
        limit: int = 0,
        user_id: str = "",
        exclude_item_ids: Iterable[str] = (),
        categories: Iterable[str] = (),
        platform: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> FrequentlyTogether:
        """Items bought or watched together with ``item_ids`` (one item or a basket
        of up to 100) within users' sessions, ranked for the whole basket by lift.

        Args:
            item_ids: One item id or a basket; NotFoundError when one is unknown.
            limit: Items wanted; 0 means the server's default (10), more than 100 is capped.
            user_id: When given, leaves out what the user saw or dismissed and records the
                list as their impression.
            exclude_item_ids: Items never to return.
            categories: When given, only items in at least one of these categories.
            platform: Where the list is shown, for analytics.
            timeout: Deadline in seconds for this call (default: the client's).
            call_metadata: Extra headers for this call.
        """
        call = convert.frequently_together(
            item_ids,
            limit=limit,
            user_id=user_id,
            exclude_item_ids=exclude_item_ids,
            categories=categories,
            platform=platform,
        )
        return self._send(call, timeout, call_metadata)

    def home_feed(
        self,
        user_id: str,
        *,
        shelf_size: int = 0,
        shelves: Iterable[ShelfKind | str] = (),
        exclude_item_ids: Iterable[str] = (),
        platform: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> HomeFeed:
        """The home page of ``user_id``: named shelves, each its own served list.

        Args:
            user_id: Whose feed; a new or stale user gets no ``for_you`` shelf and the feed's
                ``fallback_reason`` says why.
            shelf_size: Items per shelf; 0 means 10, more than 100 is capped.
            shelves: Which shelves (``ShelfKind`` or names like ``"trending"``); empty: all.
            exclude_item_ids: Items never to put on any shelf.
            platform: Where the feed is shown, for analytics.
            timeout: Deadline in seconds for this call (default: the client's).
            call_metadata: Extra headers for this call.
        """
        call = convert.home_feed(
            user_id,
            shelf_size=shelf_size,
            shelves=shelves,
            exclude_item_ids=exclude_item_ids,
            platform=platform,
        )
        return self._send(call, timeout, call_metadata)


class AsyncDiscoveryCalls(AsyncSender):
    """The same calls as coroutines, for the asyncio client."""

    async def similar_items(
        self,
        item_id: str,
        *,
        limit: int = 0,
        mode: SimilarityMode | str = SimilarityMode.AUTO,
        user_id: str = "",
        exclude_item_ids: Iterable[str] = (),
        categories: Iterable[str] = (),
        platform: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> SimilarItems:
        """``DiscoveryCalls.similar_items`` as a coroutine."""
        call = convert.similar_items(
            item_id,
            limit=limit,
            mode=mode,
            user_id=user_id,
            exclude_item_ids=exclude_item_ids,
            categories=categories,
            platform=platform,
        )
        return await self._send(call, timeout, call_metadata)

    async def frequently_together(
        self,
        item_ids: Iterable[str] | str,
        *,
        limit: int = 0,
        user_id: str = "",
        exclude_item_ids: Iterable[str] = (),
        categories: Iterable[str] = (),
        platform: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> FrequentlyTogether:
        """``DiscoveryCalls.frequently_together`` as a coroutine."""
        call = convert.frequently_together(
            item_ids,
            limit=limit,
            user_id=user_id,
            exclude_item_ids=exclude_item_ids,
            categories=categories,
            platform=platform,
        )
        return await self._send(call, timeout, call_metadata)

    async def home_feed(
        self,
        user_id: str,
        *,
        shelf_size: int = 0,
        shelves: Iterable[ShelfKind | str] = (),
        exclude_item_ids: Iterable[str] = (),
        platform: str = "",
        timeout: float | None = None,
        call_metadata: Metadata | None = None,
    ) -> HomeFeed:
        """``DiscoveryCalls.home_feed`` as a coroutine."""
        call = convert.home_feed(
            user_id,
            shelf_size=shelf_size,
            shelves=shelves,
            exclude_item_ids=exclude_item_ids,
            platform=platform,
        )
        return await self._send(call, timeout, call_metadata)
