"""The typed client against a real server on a free port: every method through the blocking and
the asyncio client, typed errors and arguments refused before sending."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
import pytest

from recgrpc.client import (
    Algorithm,
    AsyncRecommendationClient,
    ChurnPrediction,
    ClientArgumentError,
    FieldViolation,
    InteractionLogged,
    InteractionType,
    InvalidArgumentError,
    Item,
    NotFoundError,
    RecGrpcError,
    RecommendationClient,
    Recommendations,
    RiskLevel,
    UnavailableError,
    User,
)
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.jobs.churn_training import train_churn
from recgrpc.server import RunningServer
from tests import churn_history
from tests.rpc import closed_port, target

T = TypeVar("T")

CATALOGUE = [
    Item(
        "i1",
        title="Election night",
        categories=["news"],
        tags=["politics"],
        attributes={"lang": "en"},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    ),
    Item("i2", title="Cup final", categories=["sport"]),
    Item("i3", title="Budget", categories=["news"]),
    Item("retired", categories=["news"], active=False),
]
CHURN_END = datetime(2026, 6, 1, tzinfo=UTC)
# Clicks by other users make i3 the most popular item, then i1.
CLICKS = [("bob", "i3"), ("carol", "i3"), ("bob", "i1")]


def eventually(fetch: Callable[[], T], ok: Callable[[T], bool], seconds: float = 10.0) -> T:
    """The server refreshes trending in the background; poll until it shows the new events."""
    deadline = time.monotonic() + seconds
    while True:
        value = fetch()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


async def eventually_async(
    fetch: Callable[[], Awaitable[T]], ok: Callable[[T], bool], seconds: float = 10.0
) -> T:
    deadline = time.monotonic() + seconds
    while True:
        value = await fetch()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


def most_popular_first(recs: Recommendations) -> bool:
    return recs.item_ids[:1] == ["i3"]


def assert_served_list(recs: Recommendations) -> None:
    # An opaque attribution token, bounded like every id the service stores.
    assert recs.recset_id
    assert len(recs.recset_id) <= 64
    assert [r.rank for r in recs.items] == list(range(1, len(recs.items) + 1))
    assert recs.algorithm is Algorithm.POPULAR  # no trained model: trending for everyone
    assert recs.fallback_reason
    assert all(r.reason == "trending" for r in recs.items)
    assert recs.generated_at.tzinfo is not None
    assert abs(datetime.now(UTC) - recs.generated_at) < timedelta(minutes=1)


# -- every method, blocking ---------------------------------------------------------------


def test_blocking_client_every_method(server: RunningServer) -> None:
    with RecommendationClient(target(server)) as client:
        assert client.wait_until_serving(10)
        assert client.check_health()
        assert client.check_health("recgrpc.v1.CatalogService")

        assert client.upsert_items(CATALOGUE) == len(CATALOGUE)
        assert client.upsert_items(CATALOGUE[:1]) == 1  # idempotent by item_id
        assert client.upsert_users([User("alice", {"country": "NL"}, {"news": 1.0})]) == 1

        for user, item in CLICKS:
            logged = client.log_interaction(user, item, InteractionType.CLICK)
            assert not logged.duplicate
            assert uuid.UUID(logged.event_id)  # made by the client
        first = client.log_interaction(
            "bob",
            "i2",
            "view",
            event_id="bob-view-1",
            value=12.5,
            content_type="video",
            platform="web",
            metadata={"source": "home"},
            occurred_at=datetime.now(UTC) - timedelta(minutes=3),
        )
        assert first == InteractionLogged("bob-view-1", duplicate=False)
        assert client.log_interaction("bob", "i2", "VIEW", event_id="bob-view-1").duplicate

        recs = eventually(lambda: client.get_recommendations("alice"), most_popular_first)
        assert_served_list(recs)
        assert recs.item_ids[0] == "i3"
        assert sorted(recs.item_ids) == ["i1", "i2", "i3"]  # the inactive item never shows

        assert client.get_recommendations("alice", limit=1).item_ids == ["i3"]
        assert "i3" not in client.get_recommendations("alice", exclude_item_ids=["i3"]).item_ids
        assert client.get_recommendations("alice", categories=["sport"]).item_ids == ["i2"]
        assert (
            client.get_recommendations("alice", algorithm="hybrid", platform="ios").item_ids
            == recs.item_ids
        )

        assert client.submit_feedback("alice", "i3", recset_id=recs.recset_id, dismissed=True)
        assert client.submit_feedback("alice", "i1", recset_id=recs.recset_id, clicked=True)
        assert client.submit_feedback("alice", "i2", rating=4.0)
        assert "i3" not in client.get_recommendations("alice").item_ids  # dismissed for good

        with pytest.raises(NotFoundError):
            client.predict_churn("nobody")

        assert client.delete_user("alice") is True
        assert client.delete_user("alice") is False


# -- every method, asyncio -----------------------------------------------------------------


def test_async_client_every_method(server: RunningServer) -> None:
    async def scenario() -> None:
        async with AsyncRecommendationClient(target(server)) as client:
            assert await client.wait_until_serving(10)
            assert await client.check_health()

            assert await client.upsert_items(CATALOGUE) == len(CATALOGUE)
            assert await client.upsert_users([User("alice", preferences={"news": 0.5})]) == 1
            for user, item in CLICKS:
                assert not (await client.log_interaction(user, item, "click")).duplicate
            again = await client.log_interaction("bob", "i2", "view", event_id="bob-view")
            assert again == InteractionLogged("bob-view", duplicate=False)
            assert (
                await client.log_interaction("bob", "i2", "view", event_id="bob-view")
            ).duplicate

            recs = await eventually_async(
                lambda: client.get_recommendations("alice"), most_popular_first
            )
            assert_served_list(recs)
            assert recs.item_ids[0] == "i3"
            assert sorted(recs.item_ids) == ["i1", "i2", "i3"]
            limited = await client.get_recommendations(
                "alice", limit=2, exclude_item_ids=["i3"], categories=["news", "sport"]
            )
            assert len(limited.item_ids) == 2
            assert "i3" not in limited.item_ids

            assert await client.submit_feedback(
                "alice", "i3", recset_id=recs.recset_id, dismissed=True
            )
            assert "i3" not in (await client.get_recommendations("alice")).item_ids

            with pytest.raises(NotFoundError):
                await client.predict_churn("nobody")
            assert await client.delete_user("alice") is True
            assert await client.delete_user("alice") is False

    asyncio.run(scenario())


# -- typed errors --------------------------------------------------------------------------


def test_invalid_argument_names_each_bad_field(server: RunningServer) -> None:
    with RecommendationClient(target(server)) as client:
        with pytest.raises(InvalidArgumentError) as refused:
            client.get_recommendations("")
        assert refused.value.fields == ["user_id"]
        assert refused.value.field_violations == (FieldViolation("user_id", "is required"),)
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(refused.value.__cause__, grpc.RpcError)

        with pytest.raises(InvalidArgumentError) as refused:
            client.get_recommendations("x" * 200, limit=-1)
        assert refused.value.fields == ["user_id", "limit"]

        with pytest.raises(InvalidArgumentError) as refused:
            client.upsert_items([Item("ok"), Item("")])
        assert refused.value.fields == ["items[1].item_id"]

        with pytest.raises(InvalidArgumentError) as refused:
            client.submit_feedback("alice", "i1", clicked=True, dismissed=True)
        assert refused.value.fields == ["dismissed"]

        with pytest.raises(InvalidArgumentError) as refused:
            client.log_interaction(
                "alice", "i1", "view", occurred_at=datetime.now(UTC) + timedelta(hours=1)
            )
        assert refused.value.fields == ["occurred_at"]


def test_async_invalid_argument_and_not_found(server: RunningServer) -> None:
    async def scenario() -> None:
        async with AsyncRecommendationClient(target(server)) as client:
            with pytest.raises(InvalidArgumentError) as refused:
                await client.delete_user("")
            assert refused.value.fields == ["user_id"]
            with pytest.raises(ClientArgumentError) as refused:
                await client.log_interaction("alice", "i1", "klick")
            assert refused.value.fields == ["type"]
            with pytest.raises(NotFoundError) as missing:
                await client.log_interaction("alice", "no-such-item", "view")
            assert "no-such-item" in missing.value.message

    asyncio.run(scenario())


def test_not_found_for_an_unknown_item(server: RunningServer) -> None:
    with RecommendationClient(target(server)) as client:
        with pytest.raises(NotFoundError) as missing:
            client.log_interaction("alice", "no-such-item", InteractionType.VIEW)
        assert missing.value.code is grpc.StatusCode.NOT_FOUND
        assert "no-such-item" in str(missing.value)
        with pytest.raises(NotFoundError):
            client.submit_feedback("alice", "no-such-item", clicked=True)


def test_predict_churn_errors(server: RunningServer) -> None:
    with RecommendationClient(target(server)) as client:
        client.upsert_items([Item("i1")])
        client.log_interaction("alice", "i1", "view")
        with pytest.raises(NotFoundError):
            client.predict_churn("nobody")
        with pytest.raises(UnavailableError) as no_model:
            client.predict_churn("alice", as_of=datetime.now(UTC))
        assert "churn" in no_model.value.message
        with pytest.raises(InvalidArgumentError) as refused:
            client.predict_churn("alice", as_of=datetime.now(UTC) + timedelta(days=2))
        assert refused.value.fields == ["as_of"]


def test_predict_churn_with_a_trained_model(
    server: RunningServer, database: Database, settings: Settings
) -> None:
    history = churn_history.generate(database, CHURN_END, users=60, days=120, seed=3)
    train_churn(database, as_of=CHURN_END, horizon_days=30)
    loyal, churner = sorted(history.loyal)[0], sorted(history.churn_day)[0]
    with RecommendationClient(target(server), timeout=10) as client:
        # The running server loads the new model on its next refresh.
        deadline = time.monotonic() + 20
        while True:
            try:
                prediction = client.predict_churn(loyal, as_of=CHURN_END)
                break
            except UnavailableError:
                assert time.monotonic() < deadline, "the trained churn model was never loaded"
                time.sleep(0.2)
        later = client.predict_churn(churner, as_of=CHURN_END)

    for user_id, scored in [(loyal, prediction), (churner, later)]:
        assert scored.user_id == user_id
        assert 0.0 <= scored.risk <= 1.0
        expected = (
            RiskLevel.HIGH
            if scored.risk >= settings.churn_high_threshold
            else RiskLevel.MEDIUM
            if scored.risk >= settings.churn_medium_threshold
            else RiskLevel.LOW
        )
        assert scored.level is expected
        assert scored.horizon_days == 30
        assert scored.model_version
        assert scored.factors
        assert all(f.name for f in scored.factors)
        assert scored.predicted_at.tzinfo is not None

    async def scenario() -> ChurnPrediction:
        async with AsyncRecommendationClient(target(server)) as client:
            return await client.predict_churn(loyal, as_of=CHURN_END)

    again = asyncio.run(scenario())
    assert (again.risk, again.level, again.factors) == (
        prediction.risk,
        prediction.level,
        prediction.factors,
    )


def test_values_that_cannot_be_encoded_fail_before_sending() -> None:
    # No server: these never reach the network.
    with RecommendationClient(f"127.0.0.1:{closed_port()}") as client:
        refusals: list[tuple[Callable[[], object], str, str]] = [
            (lambda: client.log_interaction("alice", "i1", "klick"), "type", "'klick'"),
            (
                lambda: client.log_interaction("a", "i1", "view", occurred_at=datetime(2026, 1, 1)),
                "occurred_at",
                "timezone-aware",
            ),
            (lambda: client.get_recommendations("alice", algorithm="magic"), "algorithm", "HYBRID"),
            (lambda: client.get_recommendations("alice", timeout=0), "timeout", "positive"),
            (lambda: client.get_recommendations("alice", limit="5"), "limit", "cannot be sent"),  # type: ignore[arg-type]
            (lambda: client.submit_feedback("a", "i1", rating="9"), "rating", "cannot be sent"),  # type: ignore[arg-type]
            (
                lambda: client.upsert_items(
                    [Item("ok"), Item("i2", created_at=datetime(2026, 1, 1))]
                ),
                "items[1].created_at",
                "timezone-aware",
            ),
            (
                lambda: client.upsert_users([User("u", preferences={"jazz": "lots"})]),  # type: ignore[dict-item]
                "users[0].preferences",
                "cannot be sent",
            ),
        ]
        for call, field, words in refusals:
            with pytest.raises(ClientArgumentError) as refused:
                call()
            # Typed like the server's refusals, and still the ValueError it used to be.
            assert isinstance(refused.value, InvalidArgumentError), field
            assert isinstance(refused.value, RecGrpcError), field
            assert isinstance(refused.value, ValueError), field
            assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.fields == [field]
            assert words in refused.value.field_violations[0].description, field


def test_enum_names_are_accepted_in_any_case() -> None:
    assert InteractionType("click") is InteractionType.CLICK
    assert InteractionType("CLICK") is InteractionType.CLICK
    assert InteractionType("interaction_type_add_to_cart") is InteractionType.ADD_TO_CART
    assert Algorithm("Hybrid") is Algorithm.HYBRID
    with pytest.raises(ValueError):
        InteractionType("clack")
