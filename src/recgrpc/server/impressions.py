"""Write-behind storage of served lists (impressions), off GetRecommendations' request path.

A served list is not a write the caller asked for, so the request never waits for it: the list
goes into a bounded in-memory queue and a writer thread stores what is queued, one batch per
transaction, every ``impression_flush_seconds`` (sooner when a full batch is waiting). The
guarantee: a list is stored within about the flush interval unless the process crashes first
(a crash loses at most the lists of the last interval); a graceful shutdown stores everything
queued. When the queue is full or the database cannot take a batch, those impressions are
dropped and counted (``recgrpc_impressions_dropped_total``), and the request is answered OK all
the same. Attribution never needs the stored row: it is in the ``recset_id`` (see recset).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from recgrpc import domain
from recgrpc.db import Database, queries
from recgrpc.server.errors import is_database_outage

log = logging.getLogger(__name__)

MAX_BATCH = 500
"""Most impressions in one transaction; a full batch is written without waiting."""


ServedListRecord = tuple[str, domain.ServedList, str]
"""(user_id, served list, platform): what ``queries.record_impressions`` stores."""


class ImpressionWriter:
    """The queue and its writer thread. Thread-safe; ``record`` never blocks or raises."""

    def __init__(
        self,
        db: Database,
        *,
        capacity: int,
        flush_seconds: float,
        dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._db = db
        # A list under a lock rather than a queue.Queue: one acquisition per served list, and
        # the writer takes a whole batch at once.
        self._pending: list[ServedListRecord] = []
        self._pending_lock = threading.Lock()
        self._capacity = capacity
        self._flush_seconds = flush_seconds
        self._dropped = dropped
        self._wake = threading.Event()
        self._closed = False
        self.stored = 0
        self.dropped = 0
        self._count_lock = threading.Lock()
        # Held while a batch is taken and stored, so ``flush`` returns only after it committed.
        self._flush_lock = threading.Lock()
        self._warned_at = -1.0
        self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
        self._thread.start()

    def record(self, user_id: str, served: domain.ServedList, platform: str) -> None:
        """Queue the list's impression; drops it (counted) when closed or the queue is full."""
        if self._closed:
            self._drop(1, "the server is stopping")
            return
        with self._pending_lock:
            waiting = len(self._pending)
            if waiting < self._capacity:
                self._pending.append((user_id, served, platform))
        if waiting >= self._capacity:
            self._drop(1, "the queue is full")
        elif waiting + 1 >= MAX_BATCH:
            self._wake.set()

    @property
    def queued(self) -> int:
        """Impressions waiting to be stored."""
        return len(self._pending)

    def close(self, timeout: float = 30.0) -> None:
        """Store everything queued, then stop the writer (graceful shutdown)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            closing = self._closed
            self._flush()
            if closing:
                self._flush()  # anything queued by calls that raced the close
                return

    def flush(self) -> None:
        """Store what is queued now, and wait for any batch the writer already took.

        DeleteUser calls it first, so that no impression of the user lands after the erasure.
        """
        self._flush()

    def _flush(self) -> None:
        with self._flush_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        while True:
            with self._pending_lock:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
            if not batch:
                return
            self._store(batch)

    def _store(self, batch: list[ServedListRecord]) -> None:
        # On PostgreSQL the batch is one statement: on an autocommit connection it is its own
        # transaction, without BEGIN and COMMIT round trips (SQLite: a write transaction).
        scope = self._db.connection() if self._db.autocommit_batches else self._db.transaction()
        try:
            with scope as conn:
                queries.record_impressions(conn, batch)
        except Exception as exc:
            # Never retried: a list waiting for an outage to end would only delay the next.
            if is_database_outage(exc):
                self._drop(len(batch), "the database is unavailable")
            else:
                log.exception("impressions not stored")
                self._drop(len(batch), "the batch failed")
            return
        with self._count_lock:
            self.stored += len(batch)

    def _drop(self, count: int, why: str) -> None:
        now = time.monotonic()
        with self._count_lock:
            self.dropped += count
            # One line a second at most: a full queue drops on every request.
            warn, self._warned_at = now - self._warned_at >= 1.0, max(self._warned_at, now)
        if warn:
            log.warning("impressions dropped (%d so far): %s", self.dropped, why)
        if self._dropped is not None:
            self._dropped(count)
