"""Smoke test: a server on an empty database is healthy and answers GetRecommendations."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc


def test_empty_database_serves_and_reports_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    rec = pb_grpc.RecommendationServiceStub(channel)
    response = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1"), timeout=5)
    assert response.recommendations == []
    assert response.recset_id
    assert response.algorithm == pb.ALGORITHM_POPULAR
