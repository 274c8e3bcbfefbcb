"""SQLite's changed-users feed on a real file: what another Database announces in a committed
transaction reaches the listener, its own and rolled-back announcements never do, and rows
trimmed before the feed read them make it start its listener afresh."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import text

from recgrpc.db import Database
from recgrpc.db.sqlite_feed import SqliteChangeFeed


class Recorder:
    """A ChangeListener that remembers what it was told."""

    def __init__(self) -> None:
        self.changed_users: list[str] = []
        self.listened = 0
        self.lost_count = 0
        self._lock = threading.Lock()

    def changed(self, user_ids: Sequence[str]) -> None:
        with self._lock:
            self.changed_users.extend(user_ids)

    def listening(self) -> None:
        with self._lock:
            self.listened += 1

    def lost(self) -> None:
        with self._lock:
            self.lost_count += 1


def eventually(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def shared(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[Database, str]]:
    path = tmp_path / "shared.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite:///{path}")
    try:
        yield db, str(path)
    finally:
        db.dispose()


@pytest.fixture
def feed(shared: tuple[Database, str]) -> Iterator[Recorder]:
    _, path = shared
    recorder = Recorder()
    running = SqliteChangeFeed(path, recorder, "listener", poll_seconds=0.05)
    try:
        eventually(lambda: recorder.listened == 1, "the feed never started")
        yield recorder
    finally:
        running.close()


def announce(db: Database, user_ids: Sequence[str]) -> None:
    with db.transaction() as conn:
        db.sql.notify_users(conn, user_ids)


def test_committed_announcements_of_another_origin_reach_the_listener(
    shared: tuple[Database, str], feed: Recorder
) -> None:
    db, _ = shared
    announce(db, ["u1", "u2"])
    announce(db, ["u3"])
    eventually(lambda: feed.changed_users == ["u1", "u2", "u3"], "announcements not delivered")
    assert feed.listened == 1
    assert feed.lost_count == 0


def test_own_and_rolled_back_announcements_are_not_delivered(
    shared: tuple[Database, str], feed: Recorder
) -> None:
    db, path = shared

    def failing_write() -> None:
        with db.transaction() as conn:
            db.sql.notify_users(conn, ["rolled-back"])
            raise RuntimeError("the write failed")

    with pytest.raises(RuntimeError):
        failing_write()
    own = Recorder()
    running = SqliteChangeFeed(path, own, db.origin, poll_seconds=0.05)
    try:
        eventually(lambda: own.listened == 1, "the second feed never started")
        announce(db, ["after"])
        eventually(lambda: feed.changed_users == ["after"], "the committed one not delivered")
        time.sleep(0.2)  # several polls of the feed whose origin announced it
        assert own.changed_users == []
    finally:
        running.close()
    assert feed.listened == 1  # the rollback left no hole


def test_rows_trimmed_before_they_were_read_restart_the_listener(
    shared: tuple[Database, str], feed: Recorder
) -> None:
    db, _ = shared
    with db.transaction() as conn:  # announced and gone in one commit: never readable
        db.sql.notify_users(conn, ["missed"])
        conn.execute(text("DELETE FROM changed_users"))
    eventually(lambda: feed.listened == 2, "the hole went unnoticed")
    assert feed.changed_users == []
    announce(db, ["next"])  # and it follows on from there
    eventually(lambda: feed.changed_users == ["next"], "nothing delivered after the hole")


def test_an_erasure_keeps_no_trace_of_the_user_and_restarts_the_listener(
    shared: tuple[Database, str], feed: Recorder
) -> None:
    db, _ = shared
    announce(db, ["erased", "kept"])
    eventually(lambda: feed.changed_users == ["erased", "kept"], "announcements not delivered")
    with db.transaction() as conn:
        db.sql.notify_erased(conn, "erased")
    eventually(lambda: feed.listened == 2, "the erasure was not delivered")
    assert feed.changed_users == ["erased", "kept"]  # no user named by the erasure
    with db.transaction() as conn:
        named = conn.execute(text("SELECT user_id FROM changed_users")).scalars().all()
    assert "erased" not in named
    assert "kept" in named
