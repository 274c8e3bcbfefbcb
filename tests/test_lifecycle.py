"""A real `recgrpc serve` process and a real SIGTERM: drain, refuse, finish, exit 0.

The in-flight call is made slow deterministically: the test holds a write lock on the database
(``BEGIN IMMEDIATE`` on SQLite, ``LOCK TABLE`` on PostgreSQL), so the server's LogInteraction
waits until the test lets go.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from recgrpc.db import Database
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import catalog_pb2_grpc as cat_grpc
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

REC = "recgrpc.v1.RecommendationService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def health_status(channel: grpc.Channel) -> int | None:
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
    except grpc.RpcError:
        return None
    status: int = response.status
    return status


def handled_and_started(metrics_port: int) -> dict[tuple[str, str, str], float]:
    """``(sample name, method, code)`` -> value for recgrpc's RPC counters, parsed over HTTP."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        body = r.read().decode()
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name in {"grpc_server_handled_total", "grpc_server_started_total"}:
                key = (s.name, s.labels["grpc_method"], s.labels.get("grpc_code", ""))
                counts[key] = counts.get(key, 0) + s.value
    return counts


@contextlib.contextmanager
def write_lock(database_url: str) -> Iterator[Callable[[], None]]:
    """Hold a lock that blocks inserts into ``interactions``; yields a function releasing it."""
    db = Database(database_url)
    # On SQLite this option makes the transaction BEGIN IMMEDIATE: the database's write lock.
    conn = db.engine.connect().execution_options(recgrpc_immediate=True)
    conn.begin()
    if not db.is_sqlite:
        conn.execute(text("LOCK TABLE interactions IN EXCLUSIVE MODE"))
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            conn.rollback()
            conn.close()

    try:
        yield release
    finally:
        release()
        db.dispose()


def test_sigterm_drains_in_flight_calls_and_exits_zero(database_url: str, tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    stderr_path = tmp_path / "server.log"
    env = {
        **os.environ,
        "RECGRPC_GRACE_SECONDS": "20",
        "RECGRPC_DRAIN_DELAY_SECONDS": "1.5",
        "RECGRPC_REFRESH_SECONDS": "0.5",
        "RECGRPC_LOG_JSON": "true",
        # The in-flight call below waits on a held write lock: let it wait past the default
        # database budgets (which would answer UNAVAILABLE first), as a slow commit would.
        "RECGRPC_DB_DEADLINE_SECONDS": "60",
        "RECGRPC_DB_LOCK_TIMEOUT_SECONDS": "0",
    }
    command = [
        *(sys.executable, "-m", "recgrpc.cli", "--database-url", database_url, "serve"),
        *("--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port)),
    ]
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as channel:
            wait_for(lambda: health_status(channel) == SERVING, 60, "SERVING")
            catalog = cat_grpc.CatalogServiceStub(channel)
            rec = pb_grpc.RecommendationServiceStub(channel)
            catalog.UpsertItems(
                cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id="i1")]), timeout=5
            )
            rec.GetRecommendations(pb.GetRecommendationsRequest(user_id="u1"), timeout=5)
            with pytest.raises(grpc.RpcError) as bad:
                rec.GetRecommendations(pb.GetRecommendationsRequest(user_id=""), timeout=5)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            counts = handled_and_started(metrics_port)
            handled = "grpc_server_handled_total"
            assert counts[(handled, "GetRecommendations", "OK")] == 1
            assert counts[(handled, "GetRecommendations", "INVALID_ARGUMENT")] == 1
            assert counts[(handled, "UpsertItems", "OK")] == 1

            with write_lock(database_url) as release:
                in_flight = rec.LogInteraction.future(
                    pb.LogInteractionRequest(
                        event_id="slow-1",
                        user_id="u1",
                        item_id="i1",
                        type=pb.INTERACTION_TYPE_CLICK,
                    ),
                    metadata=[("x-request-id", "in-flight-call")],
                    timeout=30,
                )
                wait_for(
                    lambda: (
                        handled_and_started(metrics_port).get(
                            ("grpc_server_started_total", "LogInteraction", ""), 0
                        )
                        == 1
                    ),
                    30,
                    "the slow call to reach the server",
                )
                # Watched from before the signal: the server pushes the change, so seeing it
                # does not race the drain delay's clock on a busy machine.
                watch = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(), timeout=60
                )
                assert next(watch).status == SERVING
                proc.send_signal(signal.SIGTERM)
                # Drain delay: still answering, but reporting NOT_SERVING to probes.
                assert any(update.status == NOT_SERVING for update in watch)
                watch.cancel()  # an open stream would hold the server's grace period
                # Then new calls are refused while the slow one is still running.

                def refused() -> bool:
                    with grpc.insecure_channel(target) as fresh:
                        try:
                            pb_grpc.RecommendationServiceStub(fresh).GetRecommendations(
                                pb.GetRecommendationsRequest(user_id="u2"), timeout=1
                            )
                        except grpc.RpcError as exc:
                            return exc.code() == grpc.StatusCode.UNAVAILABLE
                    return False

                wait_for(refused, 30, "new calls to be refused")
                assert not in_flight.done()
                assert proc.poll() is None
                release()
                response = in_flight.result(timeout=15)
            assert response.event_id == "slow-1"
            assert not response.duplicate
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    db = Database(database_url)
    try:
        with db.reader() as session:
            stored = session.execute(
                text("SELECT count(*) FROM interactions WHERE event_id = 'slow-1'")
            ).scalar_one()
    finally:
        db.dispose()
    assert stored == 1  # acknowledged during the drain, and committed

    lines = [json.loads(line) for line in stderr_path.read_text().splitlines() if line.strip()]
    access = [e for e in lines if e.get("logger") == "recgrpc.access"]
    slow = [e for e in access if e.get("request_id") == "in-flight-call"]
    assert len(slow) == 1
    assert slow[0]["method"] == f"/{REC}/LogInteraction"
    assert slow[0]["code"] == "OK"
    assert slow[0]["duration_ms"] > 100
    assert any(e.get("code") == "INVALID_ARGUMENT" for e in access)
