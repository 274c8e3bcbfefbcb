"""Every RPC refuses bad input with INVALID_ARGUMENT naming the field (or NOT_FOUND) and writes
nothing, against a real server and database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from recgrpc.db import Database
from recgrpc.server import RunningServer
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.rpc import bad_fields, stubs, ts
from tests.service_calls import counts, seed_catalogue

# -- validation ------------------------------------------------------------------------------

LONG = "x" * 129


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": LONG}, "user_id"),
        ({"user_id": "bad\x00id"}, "user_id"),
        ({"user_id": "u", "limit": -1}, "limit"),
        ({"user_id": "u", "algorithm": 99}, "algorithm"),
        ({"user_id": "u", "exclude_item_ids": ["ok", ""]}, "exclude_item_ids[1]"),
        ({"user_id": "u", "categories": [LONG]}, "categories[0]"),
        ({"user_id": "u", "platform": "\n"}, "platform"),
    ],
)
def test_get_recommendations_validation(
    channel: grpc.Channel, database: Database, request_fields: dict[str, object], field: str
) -> None:
    rec, _ = stubs(channel)
    with pytest.raises(grpc.RpcError) as info:
        rec.GetRecommendations(pb.GetRecommendationsRequest(**request_fields), timeout=5)
    assert field in bad_fields(info.value)
    assert counts(database)["impressions"] == 0


FUTURE = datetime.now(UTC) + timedelta(hours=1)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"user_id": "", "item_id": "i1", "type": 2}, "user_id"),
        ({"user_id": "u", "item_id": "", "type": 2}, "item_id"),
        ({"user_id": "u", "item_id": "i1", "type": 0}, "type"),
        ({"user_id": "u", "item_id": "i1", "type": 77}, "type"),
        ({"user_id": "u", "item_id": "i1", "type": 2, "event_id": LONG}, "event_id"),
        ({"user_id": "u", "item_id": "i1", "type": 2, "value": float("nan")}, "value"),
        ({"user_id": "u", "item_id": "i1", "type": 2, "value": float("inf")}, "value"),
        ({"user_id": "u", "item_id": "i1", "type": 8, "value": 11}, "value"),
        ({"user_id": "u", "item_id": "i1", "type": 8, "value": 9}, "value"),  # 0.5..5 stars
        ({"user_id": "u", "item_id": "i1", "type": 8}, "value"),  # a rating of 0 stars
        ({"user_id": "u", "item_id": "i1", "type": 2, "occurred_at": ts(FUTURE)}, "occurred_at"),
        (
            {
                "user_id": "u",
                "item_id": "i1",
                "type": 2,
                "occurred_at": timestamp_pb2.Timestamp(seconds=-62135596801),  # before year 1
            },
            "occurred_at",
        ),
        (
            {
                "user_id": "u",
                "item_id": "i1",
                "type": 2,
                "metadata": {f"k{n}": "v" for n in range(65)},
            },
            "metadata",
        ),
        ({"user_id": "u", "item_id": "i1", "type": 2, "metadata": {"k": "v" * 5000}}, "metadata"),
        ({"user_id": "u", "item_id": "i1", "type": 2, "recset_id": "\t"}, "recset_id"),
        ({"user_id": "u", "item_id": "i1", "type": 2, "platform": LONG}, "platform"),
    ],
)
def test_log_interaction_validation_writes_nothing(
    channel: grpc.Channel, database: Database, request_fields: dict[str, object], field: str
) -> None:
    seed_catalogue(channel)
    rec, _ = stubs(channel)
    with pytest.raises(grpc.RpcError) as info:
        rec.LogInteraction(pb.LogInteractionRequest(**request_fields), timeout=5)
    assert field in bad_fields(info.value)
    assert counts(database)["interactions"] == 0
    assert counts(database)["users"] == 0


def test_all_bad_fields_reported_at_once(channel: grpc.Channel) -> None:
    rec, _ = stubs(channel)
    with pytest.raises(grpc.RpcError) as info:
        rec.LogInteraction(pb.LogInteractionRequest(user_id="", item_id="", type=0), timeout=5)
    assert set(bad_fields(info.value)) == {"user_id", "item_id", "type"}


def test_unknown_item_is_not_found_and_writes_nothing(
    channel: grpc.Channel, database: Database
) -> None:
    rec, _ = stubs(channel)
    for call, request in [
        (rec.LogInteraction, pb.LogInteractionRequest(user_id="u", item_id="nope", type=2)),
        (rec.SubmitFeedback, pb.SubmitFeedbackRequest(user_id="u", item_id="nope", clicked=True)),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in (info.value.details() or "")
    assert sum(counts(database).values()) == 0


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"user_id": "u", "item_id": "i1"}, "clicked"),
        ({"user_id": "u", "item_id": "i1", "clicked": True, "dismissed": True}, "dismissed"),
        ({"user_id": "u", "item_id": "i1", "rating": float("nan")}, "rating"),
        ({"user_id": "u", "item_id": "i1", "rating": -1}, "rating"),
        ({"user_id": "u", "item_id": "i1", "rating": 9}, "rating"),  # 0.5..5 stars
        ({"user_id": "u", "item_id": "i1", "clicked": True, "rating": 0.25}, "rating"),
        ({"user_id": "", "item_id": "i1", "clicked": True}, "user_id"),
    ],
)
def test_submit_feedback_validation(
    channel: grpc.Channel, database: Database, request_fields: dict[str, object], field: str
) -> None:
    seed_catalogue(channel)
    rec, _ = stubs(channel)
    with pytest.raises(grpc.RpcError) as info:
        rec.SubmitFeedback(pb.SubmitFeedbackRequest(**request_fields), timeout=5)
    assert field in bad_fields(info.value)
    assert counts(database)["feedback"] == 0


def test_predict_churn_validation(channel: grpc.Channel) -> None:
    rec, _ = stubs(channel)
    for request, field in [
        (pb.PredictChurnRequest(user_id=""), "user_id"),
        (pb.PredictChurnRequest(user_id="u", as_of=ts(FUTURE)), "as_of"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            rec.PredictChurn(request, timeout=5)
        assert field in bad_fields(info.value)


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ([cat_pb.Item(item_id=f"i{n}") for n in range(1001)], "items"),
        ([cat_pb.Item(item_id="ok"), cat_pb.Item(item_id="")], "items[1].item_id"),
        ([cat_pb.Item(item_id="a"), cat_pb.Item(item_id="a")], "items[1].item_id"),
        ([cat_pb.Item(item_id="a", title="t" * 513)], "items[0].title"),
        ([cat_pb.Item(item_id="a", categories=[""])], "items[0].categories[0]"),
        ([cat_pb.Item(item_id="a", created_at=ts(FUTURE))], "items[0].created_at"),
        ([cat_pb.Item(item_id="a", attributes={"": "v"})], "items[0].attributes"),
    ],
)
def test_upsert_items_validation_writes_nothing(
    channel: grpc.Channel, database: Database, items: list[cat_pb.Item], field: str
) -> None:
    _, catalog = stubs(channel)
    with pytest.raises(grpc.RpcError) as info:
        catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=items), timeout=5)
    assert field in bad_fields(info.value)
    assert counts(database)["items"] == 0


@pytest.mark.parametrize(
    ("users", "field"),
    [
        ([], "users"),
        ([cat_pb.User(user_id=LONG)], "users[0].user_id"),
        ([cat_pb.User(user_id="u", preferences={"c": float("nan")})], "users[0].preferences[c]"),
        ([cat_pb.User(user_id="u", preferences={"c": -1.0})], "users[0].preferences[c]"),
        ([cat_pb.User(user_id="u"), cat_pb.User(user_id="u")], "users[1].user_id"),
    ],
)
def test_upsert_users_validation_writes_nothing(
    channel: grpc.Channel, database: Database, users: list[cat_pb.User], field: str
) -> None:
    _, catalog = stubs(channel)
    with pytest.raises(grpc.RpcError) as info:
        catalog.UpsertUsers(cat_pb.UpsertUsersRequest(users=users), timeout=5)
    assert field in bad_fields(info.value)
    assert counts(database)["users"] == 0
    assert counts(database)["preferences"] == 0


def test_delete_user_validation(channel: grpc.Channel) -> None:
    _, catalog = stubs(channel)
    with pytest.raises(grpc.RpcError) as info:
        catalog.DeleteUser(cat_pb.DeleteUserRequest(user_id=""), timeout=5)
    assert bad_fields(info.value) == ["user_id"]


def test_garbage_bytes_are_invalid_argument_not_internal(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        raw = ch.unary_unary("/recgrpc.v1.RecommendationService/LogInteraction")
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff\xff", timeout=5)
    assert bad_fields(info.value) == ["request"]
