"""RecommendationService's search and user-history methods: convert and delegate, no logic."""

from __future__ import annotations

import grpc

from recgrpc.server import converters_history as conv
from recgrpc.server.handlers import Handlers
from recgrpc.server.history_queries import UserHistory
from recgrpc.server.search_items import ItemSearch
from recgrpc.v1 import recommendation_pb2 as pb


def item_search(handlers: Handlers) -> ItemSearch:
    return ItemSearch(
        handlers.settings,
        handlers.db,
        lambda: handlers.engine.snapshot,
        handlers.search,
        handlers.clock,
        observe=None if handlers.metrics is None else handlers.metrics.discovery_served,
        guard=handlers.guard,
    )


def user_history(handlers: Handlers) -> UserHistory:
    return UserHistory(handlers.settings, handlers.db, handlers.clock, guard=handlers.guard)


class SearchAndHistoryMethods:
    """Mixed into ``RecommendationServicer``, which sets ``_search`` and ``_history``."""

    _search: ItemSearch
    _history: UserHistory

    def SearchItems(
        self, request: pb.SearchItemsRequest, context: grpc.ServicerContext
    ) -> pb.SearchItemsResponse:
        settings = self._search.settings
        query = conv.search_query(request, settings.default_limit, settings.max_limit)
        return conv.search_response(self._search.search(query))

    def GetUserStats(
        self, request: pb.GetUserStatsRequest, context: grpc.ServicerContext
    ) -> pb.GetUserStatsResponse:
        user_id = conv.user_id_of(request)
        return conv.user_stats_response(user_id, self._history.user_stats(user_id))

    def ListInteractions(
        self, request: pb.ListInteractionsRequest, context: grpc.ServicerContext
    ) -> pb.ListInteractionsResponse:
        query = conv.interactions_request(request, self._history.clock())
        return conv.interactions_response(self._history.interactions(query))

    def ListChurnPredictions(
        self, request: pb.ListChurnPredictionsRequest, context: grpc.ServicerContext
    ) -> pb.ListChurnPredictionsResponse:
        user_id, page_size, token = conv.churn_history_request(request)
        return conv.churn_history_response(
            self._history.churn_predictions(user_id, page_size, token)
        )
