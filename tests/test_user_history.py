"""GetUserStats, ListInteractions and ListChurnPredictions through the typed clients (sync and
asyncio) against a real server: the numbers a support agent reads, newest-first pages with
tamper-evident tokens, and the churn history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from recgrpc.client import (
    AsyncRecommendationClient,
    InteractionType,
    InvalidArgumentError,
    Item,
    NotFoundError,
    RecommendationClient,
    RiskLevel,
)
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.server import RunningServer

T = TypeVar("T")
NOW = datetime.now(UTC).replace(microsecond=0)
ITEMS = [Item(item_id=f"item-{i}", title=f"Item {i}", categories=["c"]) for i in range(12)]


@pytest.fixture
def client(server: RunningServer) -> RecommendationClient:
    with RecommendationClient(f"127.0.0.1:{server.port}", timeout=10) as c:
        c.upsert_items(ITEMS)
        # Served once the refresher has read them (the search index follows the snapshot).
        deadline = time.monotonic() + 15
        while c.search_items("item").fallback_reason:
            assert time.monotonic() < deadline, "the new items were never served"
            time.sleep(0.05)
        yield c


def test_stats_of_an_unknown_user_are_not_found(client: RecommendationClient) -> None:
    with pytest.raises(NotFoundError):
        client.get_user_stats("never-seen")
    with pytest.raises(InvalidArgumentError) as info:
        client.get_user_stats("")
    assert [v.field for v in info.value.field_violations] == ["user_id"]


def test_stats_count_what_the_user_was_shown_and_did(
    client: RecommendationClient, database: Database
) -> None:
    first = NOW - timedelta(days=3)
    client.log_interaction("ann", "item-0", "view", occurred_at=first)
    client.log_interaction("ann", "item-1", "view", occurred_at=NOW - timedelta(days=2))
    client.log_interaction("ann", "item-1", "click", occurred_at=NOW - timedelta(days=1))
    client.log_search("ann", "item", occurred_at=NOW - timedelta(hours=1))
    served = client.get_recommendations("ann", limit=5)
    assert len(served.items) == 5
    client.submit_feedback("ann", served.items[0].item_id, recset_id=served.recset_id, clicked=True)
    client.submit_feedback(
        "ann", served.items[1].item_id, recset_id=served.recset_id, dismissed=True
    )
    # Served lists are stored behind the reply (within the impression flush interval).
    stats = eventually(lambda: client.get_user_stats("ann"), lambda s: s.lists_served == 1)
    assert stats.items_shown == 5
    assert (stats.items_clicked, stats.items_dismissed) == (1, 1)
    assert stats.click_through_rate == pytest.approx(1 / 5)
    assert stats.interactions == {
        InteractionType.VIEW: 2,
        InteractionType.CLICK: 1,
        InteractionType.SEARCH: 1,
    }
    assert stats.total_interactions == 4
    assert stats.first_activity == first
    assert stats.last_activity is not None
    assert stats.last_activity >= NOW - timedelta(hours=1)
    assert (stats.churn_risk, stats.risk_level, stats.churn_predicted_at) == (None, None, None)
    # A search served to the user is one more list.
    found = client.search_items("item", user_id="ann", limit=3)
    assert len(found.items) == 3
    eventually(lambda: client.get_user_stats("ann"), lambda s: s.lists_served == 2)

    add_predictions(database, "ann", [(0.2, "LOW", 5), (0.7, "HIGH", 1)])
    stats = client.get_user_stats("ann")
    assert stats.churn_risk == pytest.approx(0.7)
    assert stats.risk_level is RiskLevel.HIGH
    assert stats.churn_predicted_at == NOW - timedelta(days=1)


def eventually(read: Callable[[], T], done: Callable[[T], bool], seconds: float = 10.0) -> T:
    """``read()`` once ``done`` holds for it (bounded)."""
    deadline = time.monotonic() + seconds
    while not done(value := read()):
        assert time.monotonic() < deadline, f"still {value}"
        time.sleep(0.05)
    return value


def add_predictions(database: Database, user_id: str, rows: list[tuple[float, str, int]]) -> None:
    """Stored predictions as the churn scorer writes them: (risk, level, days ago)."""
    with database.writer() as session:
        for risk, level, days in rows:
            at = NOW - timedelta(days=days)
            session.add(
                m.ChurnPrediction(
                    user_id=user_id, as_of=at, risk=risk, level=level, model_version="churn-1",
                    horizon_days=30, predicted_at=at,
                    factors=[{"name": "days_since_last", "value": 3.0, "contribution": 0.1}],
                )
            )  # fmt: skip


def log_history(client: RecommendationClient, user: str, count: int) -> list[str]:
    """``count`` events an hour apart, the newest an hour ago; returns event ids newest first."""
    ids = []
    for n in range(count):
        kind = "click" if n % 3 == 0 else "view"
        at = NOW - timedelta(hours=count - n)
        ids.append(client.log_interaction(user, f"item-{n % 12}", kind, occurred_at=at).event_id)
    return ids[::-1]


def test_interactions_come_newest_first_in_pages(client: RecommendationClient) -> None:
    newest_first = log_history(client, "bob", 120)
    page = client.list_interactions("bob")
    assert len(page.interactions) == 50  # the default page size
    seen = [e.event_id for e in page.interactions]
    while page.next_page_token:
        page = client.list_interactions("bob", page_token=page.next_page_token)
        seen.extend(e.event_id for e in page.interactions)
    assert seen == newest_first
    times = [e.occurred_at for e in client.list_interactions("bob", page_size=1000).interactions]
    assert times == sorted(times, reverse=True)
    assert len(times) == 120


def test_interaction_filters(client: RecommendationClient) -> None:
    log_history(client, "cat", 30)
    client.log_search("cat", "jazz piano")
    clicks = client.list_interactions("cat", types=["click"], page_size=1000).interactions
    assert len(clicks) == 10
    assert {e.type for e in clicks} == {InteractionType.CLICK}
    searches = client.list_interactions("cat", types=[InteractionType.SEARCH]).interactions
    assert [(e.item_id, e.metadata["query"]) for e in searches] == [("", "jazz piano")]
    recent = client.list_interactions("cat", since=NOW - timedelta(hours=5, minutes=30))
    assert len(recent.interactions) == 6  # 5 hourly events and the search
    assert all(e.occurred_at >= NOW - timedelta(hours=5, minutes=30) for e in recent.interactions)
    # The last day: the events 1..23 hours before NOW (24 hours before is older than a day by
    # the time the server answers) and the search.
    assert len(client.list_interactions("cat", last_days=1, page_size=1000).interactions) == 24
    paged = client.list_interactions("cat", types=["view"], page_size=7)
    second = client.list_interactions(
        "cat", types=["view"], page_size=7, page_token=paged.next_page_token
    )
    assert {e.type for e in second.interactions} == {InteractionType.VIEW}
    assert not {e.event_id for e in paged.interactions} & {e.event_id for e in second.interactions}


def test_tampered_or_foreign_page_tokens_are_refused(client: RecommendationClient) -> None:
    log_history(client, "dan", 10)
    token = client.list_interactions("dan", page_size=3).next_page_token
    assert token
    body, _, signature = token.partition(".")
    edited = [
        body[:-1] + ("A" if body[-1] != "A" else "B") + "." + signature,
        token[:-2],
        token + "x",
        "not-a-token",
        "\u00e9" * 10,
    ]
    for bad in edited:
        with pytest.raises(InvalidArgumentError) as info:
            client.list_interactions("dan", page_size=3, page_token=bad)
        assert [v.field for v in info.value.field_violations] == ["page_token"], bad
    # A genuine token is bound to its request: another user or other filters refuse it.
    for other in ({"user_id": "eve"}, {"page_size": 4}, {"types": ["click"]}):
        args = {"user_id": "dan", "page_size": 3, **other}
        with pytest.raises(InvalidArgumentError) as info:
            client.list_interactions(page_token=token, **args)  # type: ignore[arg-type]
        assert [v.field for v in info.value.field_violations] == ["page_token"]


def test_bad_list_arguments_name_their_fields(client: RecommendationClient) -> None:
    cases = [
        ({"page_size": 1001}, ["page_size"]),
        ({"page_size": -1}, ["page_size"]),
        ({"last_days": -1}, ["last_days"]),
        ({"last_days": 1, "since": NOW}, ["last_days"]),
        ({"since": NOW + timedelta(days=1)}, ["since"]),
    ]
    for fields, expected in cases:
        with pytest.raises(InvalidArgumentError) as info:
            client.list_interactions("dan", **fields)  # type: ignore[arg-type]
        assert [v.field for v in info.value.field_violations] == expected, fields
    with pytest.raises(InvalidArgumentError) as info:
        client.list_churn_predictions("dan", page_size=5000)
    assert [v.field for v in info.value.field_violations] == ["page_size"]


def test_churn_history_newest_first_in_pages(
    client: RecommendationClient, database: Database
) -> None:
    client.log_interaction("fay", "item-0", "view")
    add_predictions(database, "fay", [(0.1 * n, "LOW", 10 - n) for n in range(7)])
    page = client.list_churn_predictions("fay", page_size=3)
    risks = [p.risk for p in page.predictions]
    while page.next_page_token:
        page = client.list_churn_predictions("fay", page_size=3, page_token=page.next_page_token)
        risks.extend(p.risk for p in page.predictions)
    assert risks == pytest.approx([0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    first = client.list_churn_predictions("fay").predictions[0]
    assert first.level is RiskLevel.LOW
    assert first.model_version == "churn-1"
    assert first.horizon_days == 30
    assert first.factors[0].name == "days_since_last"
    assert client.list_churn_predictions("nobody").predictions == ()


def test_the_asyncio_client_has_the_same_calls(server: RunningServer) -> None:
    async def scenario() -> None:
        async with AsyncRecommendationClient(f"127.0.0.1:{server.port}", timeout=10) as c:
            await c.upsert_items(ITEMS)
            deadline = time.monotonic() + 15
            while (await c.search_items("item")).fallback_reason:
                assert time.monotonic() < deadline, "the new items were never served"
                await asyncio.sleep(0.05)
            await c.log_interaction("gus", "item-3", "like")
            await c.log_search("gus", "Item")
            stats = await c.get_user_stats("gus")
            assert stats.interactions == {InteractionType.LIKE: 1, InteractionType.SEARCH: 1}
            page = await c.list_interactions("gus", page_size=1)
            assert page.interactions[0].type is InteractionType.SEARCH
            older = await c.list_interactions("gus", page_size=1, page_token=page.next_page_token)
            assert older.interactions[0].item_id == "item-3"
            found = await c.search_items("item 3", user_id="gus")
            assert found.items[0].item_id == "item-3"
            assert (await c.list_churn_predictions("gus")).predictions == ()

    asyncio.run(scenario())
