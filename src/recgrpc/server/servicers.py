"""gRPC servicers: convert proto <-> domain and delegate to the handler layer. No logic here."""

from __future__ import annotations

import grpc

from recgrpc.server import converters as conv
from recgrpc.server.discovery_api import DiscoveryServicer
from recgrpc.server.handlers import Handlers
from recgrpc.server.servicers_history import SearchAndHistoryMethods, item_search, user_history
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import catalog_pb2_grpc as cat_grpc
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc
from recgrpc.validation import RatingScale


class RecommendationServicer(
    DiscoveryServicer, SearchAndHistoryMethods, pb_grpc.RecommendationServiceServicer
):
    def __init__(self, handlers: Handlers) -> None:
        self._h = handlers
        self._search = item_search(handlers)
        self._history = user_history(handlers)
        self._ratings = RatingScale.of(handlers.settings)

    def GetRecommendations(
        self, request: pb.GetRecommendationsRequest, context: grpc.ServicerContext
    ) -> pb.GetRecommendationsResponse:
        settings = self._h.settings
        query = conv.recommendation_query(request, settings.default_limit, settings.max_limit)
        return conv.recommendations_response(self._h.get_recommendations(query))

    def LogInteraction(
        self, request: pb.LogInteractionRequest, context: grpc.ServicerContext
    ) -> pb.LogInteractionResponse:
        event = conv.interaction_from_proto(request, self._h.clock(), self._ratings)
        event_id, duplicate = self._h.log_interaction(event)
        return pb.LogInteractionResponse(event_id=event_id, duplicate=duplicate)

    def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: grpc.ServicerContext
    ) -> pb.SubmitFeedbackResponse:
        recorded = self._h.submit_feedback(conv.feedback_from_proto(request, self._ratings))
        return pb.SubmitFeedbackResponse(recorded=recorded)

    def PredictChurn(
        self, request: pb.PredictChurnRequest, context: grpc.ServicerContext
    ) -> pb.PredictChurnResponse:
        user_id, as_of = conv.churn_request(request, self._h.clock())
        return conv.churn_response(self._h.predict_churn(user_id, as_of))


class CatalogServicer(cat_grpc.CatalogServiceServicer):
    def __init__(self, handlers: Handlers) -> None:
        self._h = handlers

    def UpsertItems(
        self, request: cat_pb.UpsertItemsRequest, context: grpc.ServicerContext
    ) -> cat_pb.UpsertItemsResponse:
        items = conv.items_from_proto(request, self._h.clock())
        return cat_pb.UpsertItemsResponse(upserted=self._h.upsert_items(items))

    def UpsertUsers(
        self, request: cat_pb.UpsertUsersRequest, context: grpc.ServicerContext
    ) -> cat_pb.UpsertUsersResponse:
        users = conv.users_from_proto(request)
        return cat_pb.UpsertUsersResponse(upserted=self._h.upsert_users(users))

    def DeleteUser(
        self, request: cat_pb.DeleteUserRequest, context: grpc.ServicerContext
    ) -> cat_pb.DeleteUserResponse:
        return cat_pb.DeleteUserResponse(deleted=self._h.delete_user(conv.user_id_from(request)))
