"""Two `recgrpc serve` processes on one SQLite file, each caching user contexts far longer than
a second: a write acknowledged by one is honoured by it at once and by the other within 1 s
(the changed-users feed each process polls), and so is an import by a third process."""

from __future__ import annotations

import shutil
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from recgrpc.db import Database
from recgrpc.jobs.importer import ImportKind, import_file
from recgrpc.v1 import catalog_pb2 as cat_pb
from tests.rpc import stubs
from tests.serve_process import serve_process
from tests.test_context_cache import ITEMS, dismiss, listed, seed, view
from tests.test_workers import free_port_run

pytestmark = pytest.mark.slow

NOTIFIED_WITHIN = 1.0
CACHED_FOR = "600"
"""Seconds a cached context lives: only the feed can make a process forget one within 1 s."""


@contextmanager
def serve(url: str) -> Iterator[tuple[grpc.Channel, int]]:
    """A `recgrpc serve` process caching for ``CACHED_FOR`` seconds, a channel to it once it is
    SERVING, and its metrics port."""
    port = free_port_run(2)
    cached_for = {
        "RECGRPC_CONTEXT_CACHE_TTL_SECONDS": CACHED_FOR,
        "RECGRPC_CONTEXT_CACHE_NOTIFIED_TTL_SECONDS": CACHED_FOR,
    }
    with serve_process(url, port, metrics_port=port + 1, env=cached_for) as (_, channel):
        yield channel, port + 1


def cache_hits(metrics_port: int) -> float:
    """Context lookups the process answered from its cache (its metrics endpoint)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    prefix = 'recgrpc_context_cache_lookups_total{result="hit"}'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def cached(channel: grpc.Channel, metrics_port: int, user: str) -> list[str]:
    """What ``user`` is listed, asserting that the answer came from the process's cache."""
    before = cache_hits(metrics_port)
    items = listed(channel, user)
    assert cache_hits(metrics_port) == before + 1, "not answered from the cache"
    return items


def settled(channel: grpc.Channel, metrics_port: int, user: str) -> None:
    """List ``user`` until the process answers from its cache: an announcement of an earlier
    write still on its way (polled every 0.2 s) would evict what the first call cached."""
    deadline = time.monotonic() + 10
    while True:
        before = cache_hits(metrics_port)
        listed(channel, user)
        if cache_hits(metrics_port) == before + 1:
            return
        assert time.monotonic() < deadline, "never answered from the cache"
        time.sleep(0.05)


def honoured_within(channel: grpc.Channel, user: str, item: str, seconds: float) -> float:
    """Seconds until ``item`` is no longer listed for ``user`` (fails after ``seconds``)."""
    started = time.monotonic()
    while item in listed(channel, user):
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"{item} still served {elapsed:.2f}s after the write"
        time.sleep(0.02)
    return time.monotonic() - started


Pair = tuple[grpc.Channel, int, grpc.Channel, int, str]


@pytest.fixture(scope="module")
def pair(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Channels to processes A and B on one SQLite file with their metrics ports, and the
    file's URL; the module's tests share them, each with users of its own."""
    path = tmp_path_factory.mktemp("shared") / "shared.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    with serve(url) as (a, a_metrics), serve(url) as (b, b_metrics):
        seed(a)
        deadline = time.monotonic() + 10
        while len(listed(b, "nobody")) < len(ITEMS):
            assert time.monotonic() < deadline, "B never listed the seeded items"
            time.sleep(0.1)
        yield a, a_metrics, b, b_metrics, url


def test_a_dismissal_is_honoured_by_both_processes(pair: Pair) -> None:
    a, a_metrics, b, b_metrics, _ = pair
    view(a, "u1", ITEMS[7])  # a user with a history, cached by both from now on
    settled(a, a_metrics, "u1")
    settled(b, b_metrics, "u1")
    for item in ITEMS[:3]:
        assert item in cached(a, a_metrics, "u1")
        assert item in cached(b, b_metrics, "u1")
        dismiss(a, "u1", item)
        assert item not in listed(a, "u1")  # the process that acknowledged it: at once
        honoured_within(b, "u1", item, NOTIFIED_WITHIN)
        assert item not in cached(b, b_metrics, "u1")  # and cached again, without it
    dismiss(b, "u1", ITEMS[3])  # the other way round
    assert ITEMS[3] not in listed(b, "u1")
    honoured_within(a, "u1", ITEMS[3], NOTIFIED_WITHIN)


def test_a_view_is_honoured_by_both_processes(pair: Pair) -> None:
    a, _, b, b_metrics, _ = pair
    assert ITEMS[4] in listed(b, "u2")
    assert ITEMS[4] in cached(b, b_metrics, "u2")
    view(a, "u2", ITEMS[4])  # seen: no longer recommended
    assert ITEMS[4] not in listed(a, "u2")
    honoured_within(b, "u2", ITEMS[4], NOTIFIED_WITHIN)


def test_delete_user_leaves_nothing_cached_in_either_process(pair: Pair) -> None:
    a, _, b, b_metrics, url = pair
    view(b, "gone", ITEMS[0])
    assert ITEMS[0] not in listed(a, "gone")
    assert ITEMS[0] not in listed(b, "gone")
    assert ITEMS[0] not in cached(b, b_metrics, "gone")
    _, catalog = stubs(a)
    assert catalog.DeleteUser(cat_pb.DeleteUserRequest(user_id="gone"), timeout=10).deleted
    assert ITEMS[0] in listed(a, "gone")  # a stranger again: the item they saw is back
    started = time.monotonic()
    while ITEMS[0] not in listed(b, "gone"):
        assert time.monotonic() - started < NOTIFIED_WITHIN, "B still serves the erased history"
        time.sleep(0.02)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:  # nor a trace in the feed
        announced = {user for (user,) in conn.execute("SELECT user_id FROM changed_users")}
    assert "gone" not in announced


def test_an_import_is_honoured_by_the_running_processes(pair: Pair, tmp_path: Path) -> None:
    a, a_metrics, b, b_metrics, url = pair
    assert ITEMS[5] in listed(a, "u3")
    assert ITEMS[5] in cached(a, a_metrics, "u3")
    assert ITEMS[5] in listed(b, "u3")
    assert ITEMS[5] in cached(b, b_metrics, "u3")
    path = tmp_path / "history.csv"
    path.write_text(f"user_id,item_id,type,occurred_at\nu3,{ITEMS[5]},VIEW,2026-01-01T00:00:00Z\n")
    db = Database(url)  # what `recgrpc import` does, in this process
    try:
        assert import_file(db, ImportKind.INTERACTIONS, path).new_rows == 1
    finally:
        db.dispose()
    honoured_within(a, "u3", ITEMS[5], NOTIFIED_WITHIN)
    honoured_within(b, "u3", ITEMS[5], NOTIFIED_WITHIN)
