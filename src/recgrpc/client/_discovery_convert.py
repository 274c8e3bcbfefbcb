"""The discovery calls for both clients (sync and asyncio): each builds its request from the
method's arguments and says how to turn the reply into the client's result types."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from recgrpc.client._calls import Call
from recgrpc.client._convert import _datetime, _enum, _message, _strings
from recgrpc.client._discovery_types import (
    FrequentlyTogether,
    HomeFeed,
    Shelf,
    ShelfKind,
    SimilarItems,
    SimilarityMode,
)
from recgrpc.client._errors import InternalError
from recgrpc.client._types import RecommendedItem
from recgrpc.v1 import recommendation_pb2 as pb

_MODE_NUMBERS = {m: pb.SimilarityMode.Value("SIMILARITY_MODE_" + m.value) for m in SimilarityMode}
_MODES = {number: mode for mode, number in _MODE_NUMBERS.items()}
_SHELF_NUMBERS = {k: pb.ShelfKind.Value("SHELF_KIND_" + k.value) for k in ShelfKind}
_SHELVES = {number: kind for kind, number in _SHELF_NUMBERS.items()}


def _items(
    entries: RepeatedCompositeFieldContainer[pb.Recommendation],
) -> tuple[RecommendedItem, ...]:
    return tuple(
        RecommendedItem(item_id=r.item_id, score=r.score, rank=r.rank, reason=r.reason)
        for r in entries
    )


def similar_items(
    item_id: str,
    *,
    limit: int,
    mode: SimilarityMode | str,
    user_id: str,
    exclude_item_ids: Iterable[str],
    categories: Iterable[str],
    platform: str,
) -> Call[SimilarItems]:
    request = _message(
        pb.GetSimilarItemsRequest,
        item_id=item_id,
        limit=limit,
        mode=_MODE_NUMBERS[_enum("mode", SimilarityMode, mode)],
        user_id=user_id,
        exclude_item_ids=_strings("exclude_item_ids", exclude_item_ids),
        categories=_strings("categories", categories),
        platform=platform,
    )
    return Call("GetSimilarItems", request, _similar_items)


def _similar_items(response: pb.GetSimilarItemsResponse) -> SimilarItems:
    return SimilarItems(
        recset_id=response.recset_id,
        items=_items(response.items),
        mode=_MODES.get(response.mode, SimilarityMode.AUTO),
        model_version=response.model_version,
        fallback_reason=response.fallback_reason,
        generated_at=_datetime(response.generated_at),
    )


def frequently_together(
    item_ids: Iterable[str] | str,
    *,
    limit: int,
    user_id: str,
    exclude_item_ids: Iterable[str],
    categories: Iterable[str],
    platform: str,
) -> Call[FrequentlyTogether]:
    request = _message(
        pb.GetFrequentlyTogetherRequest,
        item_ids=_strings("item_ids", item_ids),
        limit=limit,
        user_id=user_id,
        exclude_item_ids=_strings("exclude_item_ids", exclude_item_ids),
        categories=_strings("categories", categories),
        platform=platform,
    )
    return Call("GetFrequentlyTogether", request, _frequently_together)


def _frequently_together(response: pb.GetFrequentlyTogetherResponse) -> FrequentlyTogether:
    return FrequentlyTogether(
        recset_id=response.recset_id,
        items=_items(response.items),
        model_version=response.model_version,
        fallback_reason=response.fallback_reason,
        generated_at=_datetime(response.generated_at),
    )


def home_feed(
    user_id: str,
    *,
    shelf_size: int,
    shelves: Iterable[ShelfKind | str],
    exclude_item_ids: Iterable[str],
    platform: str,
) -> Call[HomeFeed]:
    wanted = [shelves] if isinstance(shelves, str) else list(shelves)
    request = _message(
        pb.GetHomeFeedRequest,
        user_id=user_id,
        shelf_size=shelf_size,
        shelves=[
            _SHELF_NUMBERS[_enum(f"shelves[{n}]", ShelfKind, kind)] for n, kind in enumerate(wanted)
        ],
        exclude_item_ids=_strings("exclude_item_ids", exclude_item_ids),
        platform=platform,
    )
    return Call("GetHomeFeed", request, _home_feed)


def _home_feed(response: pb.GetHomeFeedResponse) -> HomeFeed:
    shelves = []
    for shelf in response.shelves:
        if shelf.kind not in _SHELVES:
            raise InternalError(f"the server sent an unknown shelf kind ({shelf.kind})")
        shelves.append(
            Shelf(
                kind=_SHELVES[shelf.kind],
                name=shelf.name,
                title=shelf.title,
                recset_id=shelf.recset_id,
                items=_items(shelf.items),
                fallback_reason=shelf.fallback_reason,
            )
        )
    return HomeFeed(
        shelves=tuple(shelves),
        model_version=response.model_version,
        fallback_reason=response.fallback_reason,
        generated_at=_datetime(response.generated_at),
    )
