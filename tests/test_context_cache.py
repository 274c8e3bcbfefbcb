"""The server's cache of user contexts: its own writes are honoured at once, reads racing a
write never put stale context back, it stays within its memory bound, and it expires."""

from __future__ import annotations

import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, queries
from recgrpc.server import RunningServer, create_server
from recgrpc.server.context_cache import ContextCache, approximate_bytes
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.rpc import stubs

ITEMS = [f"i{k}" for k in range(8)]


def context(user_id: str, events: int = 0) -> domain.UserContext:
    now = datetime.now(UTC)
    recent = tuple(
        domain.RecentInteraction(f"item-{k:06d}", domain.InteractionType.VIEW, 1.0, now)
        for k in range(events)
    )
    return domain.UserContext(
        user_id, True, seen_item_ids=frozenset(e.item_id for e in recent), recent=recent
    )


def listed(channel: grpc.Channel, user: str) -> list[str]:
    rec, _ = stubs(channel)
    reply = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id=user, limit=50), timeout=5)
    return [r.item_id for r in reply.recommendations]


def seed(channel: grpc.Channel) -> None:
    """Items every stranger is served (trending), once the refresher has seen the events."""
    _rec, catalog = stubs(channel)
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id=i, title=i) for i in ITEMS]),
        timeout=5,
    )
    for k, item in enumerate(ITEMS):
        view(channel, f"crowd{k}", item)
    deadline = time.monotonic() + 10
    while len(listed(channel, "nobody")) < len(ITEMS):
        assert time.monotonic() < deadline, "trending never listed the seeded items"
        time.sleep(0.1)


def view(channel: grpc.Channel, user: str, item: str) -> None:
    rec, _ = stubs(channel)
    rec.LogInteraction(
        pb.LogInteractionRequest(user_id=user, item_id=item, type=pb.INTERACTION_TYPE_VIEW),
        timeout=5,
    )


def dismiss(channel: grpc.Channel, user: str, item: str) -> None:
    rec, _ = stubs(channel)
    ack = rec.SubmitFeedback(
        pb.SubmitFeedbackRequest(user_id=user, item_id=item, dismissed=True), timeout=5
    )
    assert ack.recorded


# -- on one server -------------------------------------------------------------------------------


def test_a_dismissal_is_honoured_by_the_very_next_call(
    channel: grpc.Channel, server: RunningServer
) -> None:
    seed(channel)
    assert server.handlers.contexts.serving  # on PostgreSQL: its change feed listens
    for item in ITEMS[:4]:
        assert item in listed(channel, "u")  # cached now
        assert "u" in server.handlers.contexts
        dismiss(channel, "u", item)
        assert item not in listed(channel, "u")
    registry = server.metrics.registry
    assert (
        registry.get_sample_value("recgrpc_context_cache_lookups_total", {"result": "hit"}) or 0
    ) > 0
    assert (registry.get_sample_value("recgrpc_context_cache_evictions_total") or 0) >= 4
    assert registry.get_sample_value("recgrpc_context_cache_serving") == 1


def test_a_logged_view_is_seen_by_the_very_next_call(
    channel: grpc.Channel, server: RunningServer
) -> None:
    seed(channel)
    for item in ITEMS[:4]:
        assert item in listed(channel, "u")
        view(channel, "u", item)
        assert item not in listed(channel, "u")  # seen items are not recommended


def test_the_home_feed_reads_the_same_cache_and_honours_a_dismissal_at_once(
    channel: grpc.Channel, server: RunningServer
) -> None:
    seed(channel)
    rec, _ = stubs(channel)

    def shelved() -> set[str]:
        feed = rec.GetHomeFeed(pb.GetHomeFeedRequest(user_id="u", shelf_size=50), timeout=10)
        return {item.item_id for shelf in feed.shelves for item in shelf.items}

    registry = server.metrics.registry

    def hits() -> float:
        found = registry.get_sample_value("recgrpc_context_cache_lookups_total", {"result": "hit"})
        return found or 0.0

    assert ITEMS[0] in shelved()
    before = hits()
    assert ITEMS[0] in shelved()
    assert hits() > before  # the second feed found the user's context cached
    dismiss(channel, "u", ITEMS[0])
    assert ITEMS[0] not in shelved()


def test_similar_items_for_a_user_read_the_same_cache_and_honour_a_dismissal_at_once(
    channel: grpc.Channel, server: RunningServer
) -> None:
    seed(channel)
    rec, catalog = stubs(channel)
    shared = [cat_pb.Item(item_id=i, title=f"{i} jazz", categories=["jazz"]) for i in ITEMS]
    catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=shared), timeout=5)

    def similar() -> set[str]:
        request = pb.GetSimilarItemsRequest(item_id=ITEMS[7], user_id="u", limit=50)
        return {item.item_id for item in rec.GetSimilarItems(request, timeout=10).items}

    registry = server.metrics.registry

    def hits() -> float:
        found = registry.get_sample_value("recgrpc_context_cache_lookups_total", {"result": "hit"})
        return found or 0.0

    deadline = time.monotonic() + 10
    while ITEMS[0] not in similar():  # content neighbours once the catalogue change is indexed
        assert time.monotonic() < deadline, "no similar items for a catalogue sharing a category"
        time.sleep(0.1)
    before = hits()
    assert ITEMS[0] in similar()
    assert hits() > before  # the second call found the user's context cached
    dismiss(channel, "u", ITEMS[0])
    assert ITEMS[0] not in similar()


def test_delete_user_leaves_nothing_cached(channel: grpc.Channel, server: RunningServer) -> None:
    seed(channel)
    view(channel, "gone", ITEMS[0])
    dismiss(channel, "gone", ITEMS[1])
    assert not {ITEMS[0], ITEMS[1]} & set(listed(channel, "gone"))
    assert "gone" in server.handlers.contexts
    _, catalog = stubs(channel)
    assert catalog.DeleteUser(cat_pb.DeleteUserRequest(user_id="gone"), timeout=10).deleted
    assert "gone" not in server.handlers.contexts
    # A stranger now: the item they saw and the one they dismissed are served again.
    assert {ITEMS[0], ITEMS[1]} <= set(listed(channel, "gone"))


def test_preferences_changed_by_upsert_users_are_used_at_once(
    channel: grpc.Channel, server: RunningServer
) -> None:
    seed(channel)
    listed(channel, "fan")
    _, catalog = stubs(channel)
    catalog.UpsertUsers(
        cat_pb.UpsertUsersRequest(users=[cat_pb.User(user_id="fan", preferences={"news": 1})]),
        timeout=5,
    )
    assert "fan" not in server.handlers.contexts
    listed(channel, "fan")
    cached = server.handlers.contexts.get("fan", lambda: pytest.fail("not cached"))
    assert dict(cached.preferences) == {"news": 1.0}


# -- the cache itself ----------------------------------------------------------------------------


def test_a_read_that_raced_a_write_does_not_store_its_stale_context() -> None:
    cache = ContextCache(1 << 20, ttl=60)
    reading, written = threading.Event(), threading.Event()

    def slow_load() -> domain.UserContext:
        reading.set()
        assert written.wait(5)
        return context("u", events=1)  # read before the write committed

    reader = threading.Thread(target=lambda: cache.get("u", slow_load))
    reader.start()
    assert reading.wait(5)
    cache.evict(["u"])  # the write committed meanwhile
    written.set()
    reader.join(5)
    assert "u" not in cache
    fresh = cache.get("u", lambda: context("u", events=2))
    assert len(fresh.recent) == 2
    assert cache.get("u", lambda: context("u", events=3)) is fresh


def test_a_suspended_cache_reads_every_time_and_resumes_empty() -> None:
    cache = ContextCache(1 << 20, ttl=60)
    cache.get("u", lambda: context("u"))
    cache.suspend()  # the change feed is down
    assert "u" not in cache
    loads = []
    for _ in range(3):
        cache.get("u", lambda: loads.append(1) or context("u"))  # type: ignore[func-returns-value]
    assert len(loads) == 3
    assert "u" not in cache
    cache.resume()
    cache.get("u", lambda: context("u"))
    assert "u" in cache


def test_entries_expire_after_the_ttl() -> None:
    now = [100.0]
    cache = ContextCache(1 << 20, ttl=1.0, clock=lambda: now[0])
    first = cache.get("u", lambda: context("u"))
    now[0] += 0.9
    assert cache.get("u", lambda: context("u")) is first
    now[0] += 0.2
    assert cache.get("u", lambda: context("u")) is not first


def test_the_least_recently_used_go_first_within_the_memory_bound() -> None:
    size = approximate_bytes(context("x", events=10))
    cache = ContextCache(size * 3, ttl=60)
    for user in ("a", "b", "c"):
        cache.get(user, lambda user=user: context(user, events=10))  # type: ignore[misc]
    cache.get("a", lambda: context("a", events=10))  # a is now the most recent
    cache.get("d", lambda: context("d", events=10))
    assert "b" not in cache
    assert {"a", "c", "d"} <= {u for u in "abcd" if u in cache}
    assert cache.bytes <= size * 3


def test_the_size_estimate_is_close_to_what_a_loaded_context_holds(database_url: str) -> None:
    db = Database(database_url)
    try:
        now = datetime.now(UTC)
        with db.writer() as session:
            queries.upsert_items(session, [domain.Item(f"item-{k:05d}") for k in range(300)], now)
            events = [
                domain.Interaction(
                    event_id=f"e{k}",
                    user_id="heavy",
                    item_id=f"item-{k % 300:05d}",
                    type=domain.InteractionType.VIEW,
                    occurred_at=now - timedelta(minutes=k),
                )
                for k in range(300)
            ]
            queries.insert_interactions(session, events, now)
        with db.connection() as conn:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            loaded = queries.load_user_context(conn, "heavy")
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
        estimate = approximate_bytes(loaded)
        assert held / 2 <= estimate <= held * 2, (estimate, held)
    finally:
        db.dispose()


def test_sqlite_servers_sharing_a_file_see_each_others_writes_within_the_ttl(
    sqlite_template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "shared.db"
    path.write_bytes(sqlite_template.read_bytes())
    settings = Settings(
        database_url=f"sqlite:///{path}", host="127.0.0.1", port=0, metrics_port=0,
        refresh_seconds=0.5, context_cache_ttl_seconds=1.0,
    )  # fmt: skip
    first, second = create_server(settings), create_server(settings)
    try:
        assert first.wait_ready(30)
        assert second.wait_ready(30)
        with (
            grpc.insecure_channel(f"127.0.0.1:{first.port}") as a,
            grpc.insecure_channel(f"127.0.0.1:{second.port}") as b,
        ):
            seed(a)
            while len(listed(b, "nobody")) < len(ITEMS):
                time.sleep(0.1)
            assert ITEMS[0] in listed(b, "u")  # cached by the second server
            dismiss(a, "u", ITEMS[0])
            started = time.monotonic()
            assert ITEMS[0] not in listed(a, "u")
            while ITEMS[0] in listed(b, "u"):
                assert time.monotonic() - started < 1.5, "served stale past the TTL"
                time.sleep(0.05)
    finally:
        first.stop(grace=1)
        second.stop(grace=1)
