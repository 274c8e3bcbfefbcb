"""SQLite's feed of changed users: a table the writers append to, polled by each server process.

SQLite has no LISTEN/NOTIFY, so a writer announces each user whose stored context it changed by
inserting a ``changed_users`` row (``SqliteSql.notify_users``, and LogInteraction's and
imports' statement that stores events) inside its transaction: the row exists exactly when the
write committed. Each server process keeps a thread with a connection of its own that reads,
every ``poll_seconds``, the rows after the last sequence number it saw, and hands the user ids
announced by other processes (other ``Database.origin``s) to its listener
(``server.context_cache``). An erasure's row names no user (the table keeps no erased id): the
listener is then told ``listening``, which empties its cache.

Sequence numbers are AUTOINCREMENT and SQLite runs one writer at a time, so they commit in order
and without holes: a poll that finds a hole (rows trimmed before this process read them, e.g.
after a long stall) cannot know what it missed and tells its listener ``listening`` again, which
starts its cache afresh. When the connection fails, the listener is told ``lost`` and the thread
retries every ``retry_seconds``. Writers trim rows older than ``KEEP_SECONDS``, a few at a time.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from recgrpc.db.dialect import ChangeListener

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
"""How often each process reads the new rows: another process's write is honoured within it."""

KEEP_SECONDS = 60.0
"""Rows older than this are trimmed by the writers (a poller misses none unless it stalls)."""

_POLL = "SELECT seq, user_id, origin FROM changed_users WHERE seq > ? ORDER BY seq"
_TOP = "SELECT seq FROM sqlite_sequence WHERE name = 'changed_users'"


def file_uri(database: str) -> str:
    """An existing SQLite file as a URI that will not create it."""
    return Path(database).resolve().as_uri() + "?mode=rw"


class SqliteChangeFeed:
    """The polling thread; ``close`` stops it (within ``poll_seconds``)."""

    def __init__(
        self,
        database: str,
        listener: ChangeListener,
        origin: str,
        *,
        poll_seconds: float = POLL_SECONDS,
        retry_seconds: float = 1.0,
    ) -> None:
        self._uri = file_uri(database)
        self._listener = listener
        self._origin = origin
        self._poll = poll_seconds
        self._retry = retry_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="recgrpc-sqlite-change-feed", daemon=True
        )
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        down = False
        while not self._stopping.is_set():
            try:
                self._follow(down)
                return
            except Exception as exc:  # any failure: tell at once, then reconnect
                self._listener.lost()
                if not down:
                    log.warning(
                        "change feed lost (%s): cached user contexts off until it reads again",
                        exc.__class__.__name__,
                    )
                down = True
            self._stopping.wait(self._retry)

    def _follow(self, was_down: bool) -> None:
        conn = sqlite3.connect(self._uri, uri=True, timeout=30, check_same_thread=False)
        try:
            conn.isolation_level = None  # autocommit; BEGIN below makes one snapshot per poll
            last = self._top(conn)
            self._listener.listening()
            if was_down:
                log.info("change feed reading again; cached user contexts back on")
            while not self._stopping.wait(self._poll):
                last = self._read(conn, last)
        finally:
            conn.close()

    @staticmethod
    def _top(conn: sqlite3.Connection) -> int:
        row = conn.execute(_TOP).fetchone()
        return 0 if row is None else int(row[0])

    def _read(self, conn: sqlite3.Connection, last: int) -> int:
        """Evict the users announced after ``last``; returns the new last sequence number."""
        conn.execute("BEGIN")
        try:
            rows = conn.execute(_POLL, (last,)).fetchall()
            top = self._top(conn) if not rows else int(rows[-1][0])
        finally:
            conn.execute("COMMIT")
        if not rows:
            if top > last:  # rows came and were trimmed before this poll saw them
                self._listener.listening()
            return max(top, last)
        if int(rows[0][0]) != last + 1 or top - last != len(rows):
            self._listener.listening()  # a hole: what was missed is unknown, start afresh
            return top
        theirs = [user_id for _, user_id, origin in rows if origin != self._origin]
        if None in theirs:  # an erasure, announced without its user: forget everyone
            self._listener.listening()
            return top
        changed = [user_id for user_id in theirs if user_id is not None]
        if changed:
            self._listener.changed(changed)
        return top
