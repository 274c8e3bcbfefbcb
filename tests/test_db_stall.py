"""PostgreSQL stops answering (a TCP proxy owned by the test holds every byte; nothing is
closed) while clients keep calling: the health check keeps answering, GetRecommendations
answers from memory with its fallback_reason, writes answer UNAVAILABLE, every acknowledged
write is stored, and the same server recovers by itself once bytes flow again."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bench.db_stall import StallingProxy
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.server import RunningServer, create_server
from recgrpc.server.db_guard import CircuitBreaker
from recgrpc.server.errors import DATABASE_DOWN
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.conftest import POSTGRES_URL, _truncate_postgres
from tests.rpc import stubs

ITEMS = [f"item-{k}" for k in range(12)]
CLIENTS = 20  # more than the server's RPC threads


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    if not POSTGRES_URL:
        pytest.skip("a stalled database needs PostgreSQL behind a TCP proxy")
    url: str = request.getfixturevalue("postgres_migrated")
    _truncate_postgres(url)
    return url


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[StallingProxy]:
    target = make_url(postgres_url)
    running = StallingProxy((target.host or "127.0.0.1", target.port or 5432))
    yield running
    running.close()


@pytest.fixture
def served(postgres_url: str, proxy: StallingProxy) -> Iterator[RunningServer]:
    through = (
        make_url(postgres_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )
    settings = Settings(
        database_url=through,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        refresh_seconds=0.5,
        max_workers=8,
        db_deadline_seconds=0.5,  # the default, whatever conftest gives other servers
    )
    running = create_server(settings)
    assert running.wait_ready(30)
    yield running
    proxy.flowing.set()
    running.stop(grace=1)


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, call()
    except grpc.RpcError as exc:
        return exc.code(), None  # type: ignore[attr-defined]


def test_stalled_database_keeps_health_and_fallback_answering_then_recovers(
    served: RunningServer, proxy: StallingProxy, postgres_url: str
) -> None:
    target = f"127.0.0.1:{served.port}"
    channel = grpc.insecure_channel(target)
    rec, catalog = stubs(channel)
    health = health_pb2_grpc.HealthStub(channel)
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id=i, title=i) for i in ITEMS]),
        timeout=10,
    )
    rec.LogInteraction(
        pb.LogInteractionRequest(user_id="u1", item_id=ITEMS[0], type=pb.INTERACTION_TYPE_LIKE),
        timeout=10,
    )
    deadline = time.monotonic() + 20
    while (
        len(rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1")).recommendations) < 5
    ):
        assert time.monotonic() < deadline, "catalogue never served"
        time.sleep(0.1)

    proxy.flowing.clear()
    outcomes: Counter[str] = Counter()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def recommender() -> None:
        while not stop.is_set():
            # A 1.5 s deadline: an answer must come from memory well before the caller gives up.
            # A user whose context is not cached (u1's would be served for up to the cache's
            # TTL: test_context_cache).
            code, reply = code_of(
                lambda: rec.GetRecommendations(
                    pb.GetRecommendationsRequest(user_id="cold", limit=5), timeout=1.5
                )
            )
            reason = (
                reply.fallback_reason if isinstance(reply, pb.GetRecommendationsResponse) else ""
            )
            with lock:
                outcomes[f"recommend {code.name} {reason == DATABASE_DOWN}"] += 1

    threads = [threading.Thread(target=recommender) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        for n in range(8):
            code, reply = code_of(
                lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=1.5)
            )
            assert code == grpc.StatusCode.OK, f"health check {n} during the stall: {code}"
            assert isinstance(reply, health_pb2.HealthCheckResponse)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            event_id = f"during-stall-{n}"
            code, _ = code_of(
                lambda event_id=event_id: rec.LogInteraction(  # type: ignore[misc]
                    pb.LogInteractionRequest(
                        event_id=event_id,
                        user_id="u2",
                        item_id=ITEMS[1],
                        type=pb.INTERACTION_TYPE_CLICK,
                    ),
                    timeout=1.5,
                )
            )
            assert code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK}, code
            if code == grpc.StatusCode.OK:
                acknowledged.append(event_id)
            code, _ = code_of(
                lambda n=n: catalog.UpsertItems(  # type: ignore[misc]
                    cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id=f"new-{n}")]),
                    timeout=1.5,
                )
            )
            assert code == grpc.StatusCode.UNAVAILABLE, code
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    answered = outcomes.pop(f"recommend {grpc.StatusCode.OK.name} True", 0)
    assert answered > CLIENTS, outcomes
    # Lists already in flight when the stall began may still be served live; nothing else.
    assert set(outcomes) <= {"recommend OK False"}, outcomes
    assert outcomes["recommend OK False"] <= CLIENTS, outcomes

    proxy.flowing.set()
    deadline = time.monotonic() + 30
    while True:
        code, _ = code_of(
            lambda: rec.LogInteraction(
                pb.LogInteractionRequest(
                    event_id="after-stall",
                    user_id="u1",
                    item_id=ITEMS[2],
                    type=pb.INTERACTION_TYPE_VIEW,
                ),
                timeout=5,
            )
        )
        if code == grpc.StatusCode.OK:
            break
        assert time.monotonic() < deadline, f"writes never recovered: {code}"
        time.sleep(0.2)
    reply = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1", limit=5), timeout=5)
    assert reply.fallback_reason != DATABASE_DOWN
    assert ITEMS[0] not in {r.item_id for r in reply.recommendations}  # history counts again
    channel.close()

    db = Database(postgres_url)
    try:
        with db.reader() as s:
            stored = set(s.scalars(select(m.Interaction.event_id)))
    finally:
        db.dispose()
    assert "after-stall" in stored
    assert set(acknowledged) <= stored


def test_circuit_opens_after_failures_and_one_probe_closes_it() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, reset_seconds=1.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()  # open: refused at once
    now[0] += 1.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.failure()  # the probe failed: another period
    assert not breaker.allow()
    now[0] += 1.0
    assert breaker.allow()
    breaker.success()
    assert breaker.allow()
    assert breaker.allow()
