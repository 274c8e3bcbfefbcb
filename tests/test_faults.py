"""The database goes away and comes back: a TCP proxy (owned by the test) between the server and
PostgreSQL is cut and restored. The shared PostgreSQL server itself is never touched.

While cut: writes answer UNAVAILABLE and never OK; GetRecommendations keeps answering from memory
and says why (fallback_reason). Once restored, the same server recovers without a restart, and
every event it acknowledged is in the database.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.server import RunningServer, create_server
from recgrpc.server.errors import DATABASE_DOWN
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.conftest import POSTGRES_URL, _truncate_postgres
from tests.rpc import stubs

ITEMS = [f"item-{k}" for k in range(12)]


class CuttableProxy:
    """Forwards loopback TCP connections to ``upstream``; ``cut`` drops them all and refuses new
    ones (accepted, then closed at once) until ``restore``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            dropped, self.sockets = self.sockets, set()
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    if not POSTGRES_URL:
        pytest.skip(
            "cutting the database needs PostgreSQL behind a TCP proxy: "
            "set RECGRPC_TEST_DATABASE_URL (CI always does)"
        )
    url: str = request.getfixturevalue("postgres_migrated")
    _truncate_postgres(url)
    return url


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[CuttableProxy]:
    target = make_url(postgres_url)
    running = CuttableProxy((target.host or "127.0.0.1", target.port or 5432))
    yield running
    running.close()


def serve_through(proxy: CuttableProxy, postgres_url: str) -> Iterator[RunningServer]:
    """A server whose only way to the database is through the proxy."""
    through_proxy = (
        make_url(postgres_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )
    settings = Settings(
        database_url=through_proxy,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        refresh_seconds=0.5,
    )
    running = create_server(settings)
    assert running.wait_ready(30), "server never became ready"
    yield running
    running.stop(grace=1)


@pytest.fixture
def served(postgres_url: str, proxy: CuttableProxy) -> Iterator[RunningServer]:
    yield from serve_through(proxy, postgres_url)


@pytest.fixture
def direct(postgres_url: str) -> Iterator[Database]:
    """The test's own connection to the database, bypassing the proxy."""
    db = Database(postgres_url)
    yield db
    db.dispose()


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
        return code
    return grpc.StatusCode.OK


def eventually(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def cut_and_noticed(proxy: CuttableProxy, running: RunningServer) -> None:
    """Cut the database off and wait until the server's change feed has noticed: until then a
    cached user's context is served from memory (by design), not as an outage."""
    proxy.cut()
    eventually(lambda: not running.handlers.contexts.serving, seconds=10)


def seed(channel: grpc.Channel) -> None:
    rec, catalog = stubs(channel)
    catalog.UpsertItems(
        cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id=i, title=i) for i in ITEMS]),
        timeout=10,
    )
    rec.LogInteraction(
        pb.LogInteractionRequest(user_id="u1", item_id=ITEMS[0], type=pb.INTERACTION_TYPE_LIKE),
        timeout=10,
    )

    def catalogue_served() -> bool:
        reply = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1", limit=5))
        return len(reply.recommendations) == 5

    eventually(catalogue_served)


def stored_event_ids(db: Database) -> set[str]:
    with db.reader() as s:
        return set(s.scalars(select(m.Interaction.event_id)))


def test_cut_database_writes_unavailable_reads_fall_back_then_recover(
    served: RunningServer, proxy: CuttableProxy, direct: Database
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        seed(channel)
        rec, catalog = stubs(channel)
        cut_and_noticed(proxy, served)

        for k in range(5):
            log_code = code_of(
                lambda k=k: rec.LogInteraction(
                    pb.LogInteractionRequest(
                        event_id=f"during-cut-{k}",
                        user_id="u1",
                        item_id=ITEMS[1],
                        type=pb.INTERACTION_TYPE_CLICK,
                    ),
                    timeout=20,
                )
            )
            assert log_code == grpc.StatusCode.UNAVAILABLE
            feedback_code = code_of(
                lambda: rec.SubmitFeedback(
                    pb.SubmitFeedbackRequest(user_id="u1", item_id=ITEMS[2], dismissed=True),
                    timeout=20,
                )
            )
            assert feedback_code == grpc.StatusCode.UNAVAILABLE
            upsert_code = code_of(
                lambda k=k: catalog.UpsertItems(
                    cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id=f"new-{k}")]),
                    timeout=20,
                )
            )
            assert upsert_code == grpc.StatusCode.UNAVAILABLE

            reply = rec.GetRecommendations(
                pb.GetRecommendationsRequest(user_id="u1", limit=5), timeout=20
            )
            assert reply.fallback_reason == DATABASE_DOWN
            assert len(reply.recommendations) == 5

        proxy.restore()

        def logs_again() -> bool:
            return (
                code_of(
                    lambda: rec.LogInteraction(
                        pb.LogInteractionRequest(
                            event_id="after-restore",
                            user_id="u1",
                            item_id=ITEMS[3],
                            type=pb.INTERACTION_TYPE_VIEW,
                        ),
                        timeout=20,
                    )
                )
                == grpc.StatusCode.OK
            )

        eventually(logs_again)
        reply = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1", limit=5))
        assert reply.fallback_reason != DATABASE_DOWN
        # The user's history counts again: the item they liked is not recommended back.
        assert ITEMS[0] not in {r.item_id for r in reply.recommendations}
        assert (
            code_of(
                lambda: rec.SubmitFeedback(
                    pb.SubmitFeedbackRequest(user_id="u1", item_id=ITEMS[2], dismissed=True),
                    timeout=20,
                )
            )
            == grpc.StatusCode.OK
        )

    stored = stored_event_ids(direct)
    assert "after-restore" in stored
    assert not {f"during-cut-{k}" for k in range(5)} & stored


def test_every_acknowledged_event_survives_the_database_dropping_and_returning(
    served: RunningServer, proxy: CuttableProxy, direct: Database
) -> None:
    target = f"127.0.0.1:{served.port}"
    with grpc.insecure_channel(target) as channel:
        seed(channel)
    acknowledged: set[str] = set()
    refused: set[str] = set()
    unexpected: list[tuple[str, grpc.StatusCode]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(index: int) -> None:
        with grpc.insecure_channel(target) as ch:
            rec, _ = stubs(ch)
            for n in itertools.count():
                if stop.is_set():
                    return
                event_id = f"w{index}-{n}"
                code = code_of(
                    lambda: rec.LogInteraction(
                        pb.LogInteractionRequest(
                            event_id=event_id,
                            user_id=f"user-{index}",
                            item_id=ITEMS[n % len(ITEMS)],
                            type=pb.INTERACTION_TYPE_VIEW,
                        ),
                        timeout=20,
                    )
                )
                with lock:
                    if code == grpc.StatusCode.OK:
                        acknowledged.add(event_id)
                    elif code == grpc.StatusCode.UNAVAILABLE:
                        refused.add(event_id)
                    else:
                        unexpected.append((event_id, code))

    def acknowledged_count() -> int:
        with lock:
            return len(acknowledged)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            before = acknowledged_count()
            eventually(lambda before=before: acknowledged_count() > before + 50)
            proxy.cut()
            time.sleep(1.0)
            proxy.restore()
        before = acknowledged_count()
        eventually(lambda: acknowledged_count() > before + 50)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    assert not unexpected
    stored = stored_event_ids(direct)
    lost = acknowledged - stored
    assert not lost, f"{len(lost)} acknowledged events are missing, e.g. {sorted(lost)[:5]}"
    assert refused, "the cuts never reached a writer"
