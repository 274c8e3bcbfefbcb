"""The discovery RPCs at the gRPC edge: request validation, proto <-> domain, the servicer mixin.

Every field is checked like GetRecommendations' (ids 1-128 printable characters, the same
``limit`` rule, baskets of at most 100 ids, unknown enum numbers refused) and all violations
of a request are reported together.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import grpc
from google.protobuf import timestamp_pb2

from recgrpc import validation
from recgrpc.model.home_feed import ORDER, HomeFeedQuery, ShelfKind
from recgrpc.model.similar import SimilarityMode
from recgrpc.server.converters import _Checker, list_limit
from recgrpc.server.discovery_types import DiscoveryList, ServedFeed, SimilarQuery, TogetherQuery
from recgrpc.v1 import recommendation_pb2 as pb

if TYPE_CHECKING:
    from recgrpc.server.handlers import Handlers

MAX_BASKET = 100
_MODES = {
    pb.SIMILARITY_MODE_UNSPECIFIED: SimilarityMode.AUTO,
    pb.SIMILARITY_MODE_AUTO: SimilarityMode.AUTO,
    pb.SIMILARITY_MODE_BEHAVIOUR: SimilarityMode.BEHAVIOUR,
    pb.SIMILARITY_MODE_CONTENT: SimilarityMode.CONTENT,
    pb.SIMILARITY_MODE_EMBEDDING: SimilarityMode.EMBEDDING,
}
_MODE_TO_PROTO = {mode: n for n, mode in _MODES.items() if n != pb.SIMILARITY_MODE_UNSPECIFIED}
_SHELVES = {
    pb.SHELF_KIND_FOR_YOU: ShelfKind.FOR_YOU,
    pb.SHELF_KIND_BECAUSE_YOU_LIKED: ShelfKind.BECAUSE_YOU_LIKED,
    pb.SHELF_KIND_TRENDING: ShelfKind.TRENDING,
    pb.SHELF_KIND_NEW_ARRIVALS: ShelfKind.NEW_ARRIVALS,
    pb.SHELF_KIND_TOP_CATEGORIES: ShelfKind.TOP_CATEGORIES,
    pb.SHELF_KIND_DIVERSE_PICKS: ShelfKind.DIVERSE_PICKS,
}
_SHELF_TO_PROTO = {kind: n for n, kind in _SHELVES.items()}


def _filters(
    check: _Checker, user_id: str, excluded: list[str] | None, categories: list[str] | None
) -> tuple[str, frozenset[str], frozenset[str]]:
    user = check.identifier("user_id", user_id, required=False)
    ex = check.identifiers("exclude_item_ids", excluded or [], validation.MAX_LIST_FIELD)
    cats = check.identifiers("categories", categories or [], validation.MAX_LABELS)
    return user, frozenset(ex), frozenset(cats)


def similar_query(
    request: pb.GetSimilarItemsRequest, default_limit: int, max_limit: int
) -> SimilarQuery:
    check = _Checker()
    item_id = check.identifier("item_id", request.item_id)
    limit = list_limit(check, "limit", request.limit, default_limit, max_limit)
    user_id, excluded, categories = _filters(
        check, request.user_id, list(request.exclude_item_ids), list(request.categories)
    )
    mode = _MODES.get(request.mode)
    if mode is None:
        check.add("mode", f"unknown value {request.mode}")
    platform = check.text("platform", request.platform)
    check.raise_if_any()
    assert mode is not None
    return SimilarQuery(item_id, limit, user_id, excluded, categories, mode, platform)


def together_query(
    request: pb.GetFrequentlyTogetherRequest, default_limit: int, max_limit: int
) -> TogetherQuery:
    check = _Checker()
    basket = list(request.item_ids)
    if not basket:
        check.add("item_ids", "is required: one item or a basket of up to 100")
    basket = check.identifiers("item_ids", basket, MAX_BASKET)
    limit = list_limit(check, "limit", request.limit, default_limit, max_limit)
    user_id, excluded, categories = _filters(
        check, request.user_id, list(request.exclude_item_ids), list(request.categories)
    )
    platform = check.text("platform", request.platform)
    check.raise_if_any()
    return TogetherQuery(
        tuple(dict.fromkeys(basket)), limit, user_id, excluded, categories, platform
    )


def home_feed_query(
    request: pb.GetHomeFeedRequest, default_limit: int, max_limit: int
) -> HomeFeedQuery:
    check = _Checker()
    user_id = check.identifier("user_id", request.user_id)
    size = list_limit(check, "shelf_size", request.shelf_size, default_limit, max_limit)
    shelves = set()
    if len(request.shelves) > len(ORDER) * 2:
        check.add("shelves", f"must have at most {len(ORDER) * 2} entries")
    for i, number in enumerate(request.shelves[: len(ORDER) * 2]):
        kind = _SHELVES.get(number)
        if kind is None:
            check.add(f"shelves[{i}]", f"unknown value {number}")
        else:
            shelves.add(kind)
    excluded = check.identifiers(
        "exclude_item_ids", list(request.exclude_item_ids), validation.MAX_LIST_FIELD
    )
    platform = check.text("platform", request.platform)
    check.raise_if_any()
    return HomeFeedQuery(
        user_id,
        size,
        frozenset(shelves) if shelves else frozenset(ORDER),
        frozenset(excluded),
        platform,
    )


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _items(served: DiscoveryList) -> list[pb.Recommendation]:
    return [
        pb.Recommendation(item_id=it.item_id, score=it.score, rank=rank, reason=it.reason)
        for rank, it in enumerate(served.items, start=1)
    ]


def similar_response(served: DiscoveryList) -> pb.GetSimilarItemsResponse:
    return pb.GetSimilarItemsResponse(
        recset_id=served.recset_id,
        items=_items(served),
        mode=_MODE_TO_PROTO[served.mode],
        model_version=served.model_version,
        fallback_reason=served.fallback_reason,
        generated_at=_timestamp(served.generated_at),
    )


def together_response(served: DiscoveryList) -> pb.GetFrequentlyTogetherResponse:
    return pb.GetFrequentlyTogetherResponse(
        recset_id=served.recset_id,
        items=_items(served),
        model_version=served.model_version,
        fallback_reason=served.fallback_reason,
        generated_at=_timestamp(served.generated_at),
    )


def home_feed_response(served: ServedFeed) -> pb.GetHomeFeedResponse:
    shelves = [
        pb.Shelf(
            kind=_SHELF_TO_PROTO[shelf.kind],
            name=shelf.name,
            title=shelf.title,
            recset_id=recset_id,
            items=[
                pb.Recommendation(item_id=it.item_id, score=it.score, rank=rank, reason=it.reason)
                for rank, it in enumerate(shelf.items, start=1)
            ],
            fallback_reason=shelf.fallback_reason,
        )
        for recset_id, shelf in zip(served.recset_ids, served.feed.shelves, strict=True)
    ]
    return pb.GetHomeFeedResponse(
        shelves=shelves,
        model_version=served.feed.model_version,
        fallback_reason="; ".join(served.omitted),
        generated_at=_timestamp(served.generated_at),
    )


class DiscoveryServicer:
    """The discovery methods of RecommendationService (mixed into its servicer)."""

    _h: Handlers

    def GetSimilarItems(
        self, request: pb.GetSimilarItemsRequest, context: grpc.ServicerContext
    ) -> pb.GetSimilarItemsResponse:
        s = self._h.settings
        query = similar_query(request, s.default_limit, s.max_limit)
        return similar_response(self._h.discovery.similar_items(query))

    def GetFrequentlyTogether(
        self, request: pb.GetFrequentlyTogetherRequest, context: grpc.ServicerContext
    ) -> pb.GetFrequentlyTogetherResponse:
        s = self._h.settings
        query = together_query(request, s.default_limit, s.max_limit)
        return together_response(self._h.discovery.frequently_together(query))

    def GetHomeFeed(
        self, request: pb.GetHomeFeedRequest, context: grpc.ServicerContext
    ) -> pb.GetHomeFeedResponse:
        s = self._h.settings
        query = home_feed_query(request, s.default_limit, s.max_limit)
        return home_feed_response(self._h.discovery.home_feed(query))
