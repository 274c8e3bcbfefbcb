"""Two `recgrpc serve` processes on one PostgreSQL database, each caching user contexts: a write
acknowledged by one is honoured by it at once and by the other within 1 s (LISTEN/NOTIFY), and
with its listener connection killed the other serves from the database, never from a stale
cache. An import (another Database) is honoured by both; so is a dismissal under `--workers 2`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import psycopg
import pytest

from recgrpc.db import Database
from recgrpc.db.change_feed import CHANNEL, conninfo
from recgrpc.db.engine import normalise_url
from recgrpc.jobs.importer import ImportKind, import_file
from recgrpc.v1 import catalog_pb2 as cat_pb
from tests.conftest import POSTGRES_SKIPPED, POSTGRES_URL, _truncate_postgres
from tests.rpc import stubs
from tests.serve_process import serve_process
from tests.test_context_cache import ITEMS, dismiss, listed, seed, view
from tests.test_workers import children, free_port, free_port_run, serving

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not POSTGRES_URL, reason=POSTGRES_SKIPPED or "no PostgreSQL"),
]

NOTIFIED_WITHIN = 1.0


def serve(url: str) -> AbstractContextManager[tuple[subprocess.Popen[bytes], grpc.Channel]]:
    """A `recgrpc serve` process and a channel to it, once it is SERVING."""
    return serve_process(url, free_port())


def feed_backend(pid: int) -> int | None:
    """The PostgreSQL backend of server process ``pid``'s LISTEN connection, once it listens."""
    with psycopg.connect(conninfo(normalise_url(POSTGRES_URL)), autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.pid FROM pg_stat_activity AS a"
            " WHERE a.application_name = %s AND a.query ILIKE %s",
            (f"recgrpc-change-feed-{pid}", f"LISTEN {CHANNEL}%"),
        ).fetchone()
        return None if row is None else int(row[0])


def wait_for_feed(pid: int) -> int:
    deadline = time.monotonic() + 10
    while (backend := feed_backend(pid)) is None:
        assert time.monotonic() < deadline, "the change feed never listened"
        time.sleep(0.1)
    return backend


def terminate(backend: int) -> None:
    with psycopg.connect(conninfo(normalise_url(POSTGRES_URL)), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (backend,))


def honoured_within(channel: grpc.Channel, user: str, item: str, seconds: float) -> float:
    """Seconds until ``item`` is no longer listed for ``user`` (fails after ``seconds``)."""
    started = time.monotonic()
    while item in listed(channel, user):
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"{item} still served {elapsed:.2f}s after the write"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def pair(postgres_migrated: str) -> Iterator[tuple[grpc.Channel, grpc.Channel, int]]:
    """Channels to processes A and B (both caching, their feeds listening), and B's pid; the
    module's tests share them, each with users of its own."""
    _truncate_postgres(postgres_migrated)
    with serve(postgres_migrated) as (a_proc, a), serve(postgres_migrated) as (b_proc, b):
        wait_for_feed(a_proc.pid)
        wait_for_feed(b_proc.pid)
        seed(a)
        deadline = time.monotonic() + 10
        while len(listed(b, "nobody")) < len(ITEMS):
            assert time.monotonic() < deadline, "B never listed the seeded items"
            time.sleep(0.1)
        yield a, b, b_proc.pid


def test_a_dismissal_is_honoured_by_both_processes(
    pair: tuple[grpc.Channel, grpc.Channel, int],
) -> None:
    a, b, _ = pair
    for item in ITEMS[:3]:
        assert item in listed(a, "u1")
        assert item in listed(b, "u1")
        dismiss(a, "u1", item)
        assert item not in listed(a, "u1")  # the process that acknowledged it: at once
        honoured_within(b, "u1", item, NOTIFIED_WITHIN)


def test_delete_user_leaves_nothing_cached_in_either_process(
    pair: tuple[grpc.Channel, grpc.Channel, int],
) -> None:
    a, b, _ = pair
    view(b, "gone", ITEMS[0])
    assert ITEMS[0] not in listed(a, "gone")
    assert ITEMS[0] not in listed(b, "gone")
    _, catalog = stubs(a)
    assert catalog.DeleteUser(cat_pb.DeleteUserRequest(user_id="gone"), timeout=10).deleted
    assert ITEMS[0] in listed(a, "gone")  # a stranger again: the item they saw is back
    started = time.monotonic()
    while ITEMS[0] not in listed(b, "gone"):
        assert time.monotonic() - started < NOTIFIED_WITHIN, "B still serves the erased history"
        time.sleep(0.02)


def test_with_its_listener_killed_a_process_serves_from_the_database(
    pair: tuple[grpc.Channel, grpc.Channel, int],
) -> None:
    a, b, b_pid = pair
    for item in ITEMS[:3]:
        assert item in listed(b, "u2")  # cached by B
        terminate(wait_for_feed(b_pid))
        time.sleep(0.2)  # B notices the closed connection; it reconnects after a second
        dismiss(a, "u2", item)  # no notification reaches B now
        # Either B's cache is off until its feed listens again, or the feed is back and was
        # told: B never answers from the context it cached before the write.
        assert item not in listed(b, "u2")
        wait_for_feed(b_pid)  # and it listens again
    # Back to caching, and notified again.
    assert ITEMS[4] in listed(b, "u2")
    dismiss(a, "u2", ITEMS[4])
    honoured_within(b, "u2", ITEMS[4], NOTIFIED_WITHIN)


def test_an_import_is_honoured_by_the_running_processes(
    pair: tuple[grpc.Channel, grpc.Channel, int], tmp_path: Path
) -> None:
    a, b, _ = pair
    assert ITEMS[5] in listed(a, "u3")
    assert ITEMS[5] in listed(b, "u3")  # cached by both
    path = tmp_path / "history.csv"
    path.write_text(f"user_id,item_id,type,occurred_at\nu3,{ITEMS[5]},VIEW,2026-01-01T00:00:00Z\n")
    db = Database(POSTGRES_URL)  # what `recgrpc import` does, in this process
    try:
        assert import_file(db, ImportKind.INTERACTIONS, path).new_rows == 1
    finally:
        db.dispose()
    honoured_within(a, "u3", ITEMS[5], NOTIFIED_WITHIN)
    honoured_within(b, "u3", ITEMS[5], NOTIFIED_WITHIN)


def worker_lookups(metrics_port: int) -> float:
    """GetRecommendations context lookups a worker answered (its own metrics endpoint)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("recgrpc_context_cache_lookups_total{")
    )


def test_serve_with_two_workers_honours_a_dismissal_in_both(postgres_migrated: str) -> None:
    _truncate_postgres(postgres_migrated)
    port = free_port_run(3)  # gRPC, then each worker's metrics port
    metrics = port + 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECGRPC_")}
    env.update(RECGRPC_REFRESH_SECONDS="0.5", RECGRPC_DB_DEADLINE_SECONDS="10")
    command = [
        sys.executable, "-m", "recgrpc.cli", "--database-url", postgres_migrated, "serve",
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics),
        "--dashboard-port", "0", "--workers", "2",
    ]  # fmt: skip
    parent = subprocess.Popen(command, env=env)
    # A connection of its own per channel (not gRPC's shared one), each to either worker.
    own = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=own) for _ in range(12)]
    try:
        deadline = time.monotonic() + 60
        while len(children(parent.pid)) < 2 or not all(serving(port) for _ in range(6)):
            assert parent.poll() is None, "server exited"
            assert time.monotonic() < deadline, "workers never became ready"
            time.sleep(0.3)
        for worker in children(parent.pid):
            wait_for_feed(worker)
        seed(channels[0])
        for channel in channels:  # each connection lands on either worker; all cache u4
            deadline = time.monotonic() + 10
            while len(listed(channel, "nobody")) < len(ITEMS):
                assert time.monotonic() < deadline, "a worker never listed the seeded items"
                time.sleep(0.1)
            assert ITEMS[6] in listed(channel, "u4")
        assert worker_lookups(metrics) > 0
        assert worker_lookups(metrics + 1) > 0  # both workers served
        dismiss(channels[0], "u4", ITEMS[6])
        assert ITEMS[6] not in listed(channels[0], "u4")  # the acknowledging worker: at once
        for channel in channels:
            honoured_within(channel, "u4", ITEMS[6], NOTIFIED_WITHIN)
    finally:
        for channel in channels:
            channel.close()
        parent.terminate()
        parent.wait(60)
