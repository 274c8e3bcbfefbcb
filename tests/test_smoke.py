from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import catalog_pb2_grpc as cat_grpc
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


def test_trending_after_interactions(channel: grpc.Channel) -> None:
    catalog = cat_grpc.CatalogServiceStub(channel)
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(
            items=[cat_pb.Item(item_id=f"i{n}", categories=["c"]) for n in range(5)]
        ),
        timeout=5,
    )
    rec = pb_grpc.RecommendationServiceStub(channel)
    for n, item in enumerate(["i1", "i1", "i2"]):
        rec.LogInteraction(
            pb.LogInteractionRequest(
                event_id=f"e{n}", user_id=f"other{n}", item_id=item,
                type=pb.INTERACTION_TYPE_CLICK,
            ),
            timeout=5,
        )
    rec.LogInteraction(
        pb.LogInteractionRequest(user_id="me", item_id="i2", type=pb.INTERACTION_TYPE_VIEW),
        timeout=5,
    )
    import time

    deadline = time.time() + 10
    while time.time() < deadline:
        response = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="me"), timeout=5)
        ids = [r.item_id for r in response.recommendations]
        if ids and ids[0] == "i1":
            break
        time.sleep(0.2)
    assert ids[0] == "i1"
    assert "i2" not in ids
