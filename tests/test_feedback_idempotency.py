"""SubmitFeedback is stored once per feedback_id: a resent call, or the client's own retry after
its answer was lost, never counts twice (CTR and the clicked/dismissed flags stay true)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from recgrpc.client import Item, RecommendationClient
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.server import RunningServer
from tests.test_faults import CuttableProxy

HTTP2_HEADERS = 0x1


class LosesFirstAnswer(CuttableProxy):
    """A loopback TCP proxy that, on its first connection, forwards the call to the server but
    drops the line when the server's answer (its first HEADERS frame on a stream) comes back:
    the server has done the work, the client hears only that the connection broke."""

    def __init__(self, upstream: int) -> None:
        self.lost = 0
        self._to_lose = 1
        super().__init__(("127.0.0.1", upstream))

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:  # type: ignore[override]
        with self.lock:
            lose = src.getpeername()[1] == self.upstream[1] and self._to_lose > 0
            self._to_lose -= lose
        if not lose:
            CuttableProxy._pump(src, dst)
            return
        buffer = b""  # the server's HTTP/2 frames, forwarded whole
        try:
            while data := src.recv(65536):
                buffer += data
                while len(buffer) >= 9:
                    length = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < 9 + length:
                        break
                    kind, stream = buffer[3], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                    if kind == HTTP2_HEADERS and stream:
                        self.lost += 1
                        return
                    dst.sendall(buffer[: 9 + length])
                    buffer = buffer[9 + length :]
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def lossy(server: RunningServer) -> Iterator[LosesFirstAnswer]:
    proxy = LosesFirstAnswer(server.port)
    yield proxy
    proxy.close()


def _rows(database: Database, user_id: str) -> int:
    with database.reader() as session:
        count: int = session.scalar(
            select(func.count()).select_from(m.Feedback).where(m.Feedback.user_id == user_id)
        )
    return count


def test_the_clients_retry_after_a_lost_answer_stores_once(
    server: RunningServer, lossy: LosesFirstAnswer, database: Database
) -> None:
    with RecommendationClient(f"127.0.0.1:{server.port}") as direct:
        direct.upsert_items([Item(item_id="book-1")])
    with RecommendationClient(f"127.0.0.1:{lossy.port}") as client:
        # One logical call; the first answer is lost after the server stored it, and the
        # channel sends the very same request again.
        assert client.submit_feedback("alice", "book-1", clicked=True)
    assert lossy.lost == 1
    assert _rows(database, "alice") == 1


def test_a_resent_feedback_id_is_stored_once(server: RunningServer, database: Database) -> None:
    with RecommendationClient(f"127.0.0.1:{server.port}") as client:
        client.upsert_items([Item(item_id="book-1"), Item(item_id="book-2")])
        recs = client.get_recommendations("bob")
        for _ in range(3):
            assert client.submit_feedback(
                "bob", "book-1", recset_id=recs.recset_id, clicked=True, feedback_id="fb-1"
            )
        # Concurrent resends of one id (one group-commit batch or several): still one row.
        threads = [
            threading.Thread(
                target=client.submit_feedback,
                args=("bob", "book-2"),
                kwargs={"dismissed": True, "feedback_id": "fb-2"},
            )
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        # Without an id each call is new feedback.
        assert client.submit_feedback("bob", "book-1", clicked=True)
        assert client.submit_feedback("bob", "book-1", clicked=True)
        assert "book-2" not in client.get_recommendations("bob").item_ids  # dismissed
    with database.reader() as session:
        stored = session.execute(
            select(m.Feedback.feedback_id, func.count())
            .where(m.Feedback.user_id == "bob")
            .group_by(m.Feedback.feedback_id)
        ).all()
    counts = dict(stored)
    assert counts.pop("fb-1") == 1
    assert counts.pop("fb-2") == 1
    assert sorted(counts.values()) == [1, 1]
    # The feedback counter (CTR's numerator) counts each feedback once too.
    registry = server.metrics.registry
    assert registry.get_sample_value("recgrpc_feedback_total", {"kind": "clicked"}) == 3
    assert registry.get_sample_value("recgrpc_feedback_total", {"kind": "dismissed"}) == 1
