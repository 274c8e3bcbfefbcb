"""Group commit: concurrent calls share one database transaction (LogInteraction,
SubmitFeedback and PredictChurn's record; served lists are written behind: server.impressions).

A single-row transaction costs several round trips (begin, item check, user upsert, insert,
commit), and under load those round trips, not Python, bound throughput. One writer thread takes
every event queued while the previous transaction ran and stores them all in one transaction,
so the per-event cost shrinks as load grows, while a lone event still commits at once.

Each caller blocks until the transaction holding its event has committed, and only then gets its
answer: an acknowledged event is always durable. With a ``DatabaseGuard`` the wait is bounded
by its deadline: a caller that gives up answers UNAVAILABLE (its event is then either skipped,
if no writer took it yet, or in a transaction whose outcome it cannot know: retrying with the
same ``event_id`` is safe), and while the guard's circuit is open callers are refused at once.

Answers stay per event: an unknown item fails only its own caller (NOT_FOUND), a repeated
``event_id`` is reported as a duplicate whether it was stored earlier or by an earlier event in
the same batch. If the transaction fails, every caller in it fails: UNAVAILABLE when the
database is unreachable, otherwise the events are retried one by one so a single bad event
cannot fail its neighbours.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from sqlalchemy import Connection

from recgrpc import domain, recset, tracing
from recgrpc.db import Database, churn_data, queries
from recgrpc.errors import NotFound, Unavailable
from recgrpc.jobs.churn_scoring import prediction_row
from recgrpc.server.db_guard import DatabaseGuard
from recgrpc.server.errors import DATABASE_UNAVAILABLE, DatabaseStalled, is_database_outage

log = logging.getLogger(__name__)

MAX_BATCH = 256
"""Most items stored in one transaction (bounded so one transaction stays short)."""

T = TypeVar("T")


class BatchFailed(Exception):
    """An unexpected error stored nothing of the batch (the cause is chained and logged)."""


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class _Pending(Generic[T]):
    item: T
    # Released by the writer once the item's batch is over. A held lock is the cheapest one-shot
    # signal between threads: an Event is a Condition around a lock, and its set/wait were a
    # tenth of LogInteraction's interpreter time in py-spy.
    done: threading.Lock = field(default_factory=_held_lock)
    # Taken by whichever comes first: a writer putting the item in a batch, or its caller giving
    # up at the deadline (the writer then skips it).
    taken: threading.Lock = field(default_factory=threading.Lock)
    duplicate: bool = False
    # The (algorithm, model_version) of the stored list a feedback names, when looked up.
    attribution: tuple[str, str] | None = None
    error: Exception | None = None
    batch_size: int = 0  # how many items shared its transaction (for the trace)


_STOP = object()


class GroupCommitter(Generic[T]):
    """Writer threads that store what concurrent callers submit, a batch per transaction.

    Thread-safe; ``submit`` may be called from any number of RPC threads and returns once the
    transaction holding its item committed. With several ``writers`` (PostgreSQL), one batch is
    built while another waits for its commit to reach disk. ``close`` stores what is queued and
    stops the threads; later submissions are refused (UNAVAILABLE). Subclasses say how a batch
    is stored (``_store``), setting per-item answers and errors. ``catalogued`` gives the item
    ids known to be in the catalogue (the serving snapshot's), to skip looking them up.
    """

    name = "group-commit"
    what = "item"

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        writers: int = 1,
        max_batch: int = MAX_BATCH,
        catalogued: Callable[[], Container[str]] = frozenset,
        guard: DatabaseGuard | None = None,
        committed: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._db = db
        # Told the users whose stored context a batch changed, after its commit and before
        # its callers are answered (the server's context cache evicts them).
        self._committed = committed
        self._guard = guard
        self._clock = clock
        self._catalogued = catalogued
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending[T] | object] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._threads = [
            threading.Thread(target=self._run, name=f"recgrpc-{self.name}-{i}", daemon=True)
            for i in range(writers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, item: T, timeout: float | None = None) -> _Pending[T]:
        """Queue ``item`` and wait for its commit; raises what storing it raised.

        With a guard, waits at most ``timeout`` (default: the guard's) and raises
        DatabaseStalled after it, or at once while the guard's circuit is open.
        """
        guard = self._guard
        if guard is not None and not guard.breaker.allow():
            raise DatabaseStalled()
        pending = _Pending(item)
        with tracing.span("recgrpc.group_commit", {"recgrpc.writer": self.name}) as span:
            with self._lock:
                if self._closed.is_set():
                    raise Unavailable("the server is shutting down; retry")
                self._queue.put(pending)
            if guard is None:
                pending.done.acquire()
            elif not pending.done.acquire(
                timeout=max(guard.timeout if timeout is None else timeout, 0)
            ):
                pending.taken.acquire(blocking=False)  # not in a batch yet: the writer skips it
                guard.breaker.failure()
                raise DatabaseStalled()
            span.set_attribute("recgrpc.batch_size", pending.batch_size)
        if pending.error is not None:
            if guard is not None and is_database_outage(pending.error):
                guard.breaker.failure()
            raise pending.error
        if guard is not None:
            guard.breaker.success()
        return pending

    def close(self, timeout: float = 10.0) -> None:
        """Commit everything already queued, then stop the writer threads."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            for _ in self._threads:
                self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)

    def _run(self) -> None:
        try:
            self._serve_queue()
        finally:
            self._release_connection()

    def _serve_queue(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if not isinstance(first, _Pending):
                return
            batch: list[_Pending[T]] = [first] if first.taken.acquire(blocking=False) else []
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(more, _Pending):
                    stopping = True
                    break
                if more.taken.acquire(blocking=False):  # else its caller gave up waiting
                    batch.append(more)
            if not batch:
                continue
            try:
                self._commit(batch)
            except Exception as exc:
                # A bug in the error handling itself: the callers hear of a failure (never of a
                # success that may not be), and the writer lives on for the next batch.
                log.error("%d %s(s) in an unknown state", len(batch), self.what, exc_info=exc)
                for pending in batch:
                    pending.error = pending.error or BatchFailed(f"{self.what} not stored")
            finally:
                for pending in batch:
                    pending.batch_size = len(batch)
                    pending.done.release()

    def _commit(self, batch: Sequence[_Pending[T]]) -> None:
        try:
            self._store(batch)
        except Exception as exc:
            if is_database_outage(exc):
                log.warning(
                    "%d %s(s) not stored: database unavailable (%s)",
                    len(batch),
                    self.what,
                    exc.__class__.__name__,
                )
                for pending in batch:
                    pending.error = Unavailable(DATABASE_UNAVAILABLE)
            elif len(batch) > 1:
                # Isolate whichever item broke the transaction; the others still commit.
                for pending in batch:
                    pending.error = None
                    self._commit([pending])
            else:
                log.error("%s not stored", self.what, exc_info=exc)
                batch[0].error = BatchFailed(f"{self.what} not stored")

    def _store(self, batch: Sequence[_Pending[T]]) -> None:
        raise NotImplementedError

    def _changed(self, user_ids: set[str]) -> None:
        if self._committed is not None and user_ids:
            self._committed(user_ids)

    @contextmanager
    def _own_connection(self) -> Iterator[Connection]:
        """This writer thread's autocommit connection, kept from one batch to the next.

        A checkout from the shared pool per batch was about a fifth of the writer's samples in
        py-spy at the small batches of moderate load. After any error the connection is dropped
        (after an outage it is dead) and the next batch opens a fresh one.
        """
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._db.autocommit_connection()
        try:
            yield conn
        except BaseException:
            self._release_connection()
            raise

    def _release_connection(self) -> None:
        conn: Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with suppress(Exception):  # already broken; closing only returns it to the pool
                conn.close()

    def _existing_items(self, conn: Connection, item_ids: set[str]) -> set[str]:
        """Which of ``item_ids`` are in the catalogue.

        Items are never deleted, so an id the serving snapshot holds needs no query; only ids
        it does not know yet (added since the last refresh, or inactive) are looked up.
        """
        catalogued = self._catalogued()
        unknown = {i for i in item_ids if i not in catalogued}
        if not unknown:
            return item_ids
        return (item_ids - unknown) | queries.existing_item_ids(conn, unknown)


class InteractionWriter(GroupCommitter[domain.Interaction]):
    """LogInteraction's group commit (see the module docstring)."""

    name = "interaction-writer"
    what = "interaction"

    def log(self, event: domain.Interaction) -> bool:
        """Store ``event`` once; True when its ``event_id`` was already stored (a duplicate).

        Returns only after the event's transaction committed; raises NotFound for an item not
        in the catalogue, Unavailable when the database cannot be reached.
        """
        return self.submit(event).duplicate

    def _store(self, batch: Sequence[_Pending[domain.Interaction]]) -> None:
        now = self._clock()
        # SQLite: one write transaction for the batch. PostgreSQL: the batch is stored by a
        # single statement (users and events), which on an autocommit connection is its own
        # transaction, committed when it returns: no BEGIN and COMMIT round trips.
        own = self._db.autocommit_batches
        batch_scope = self._own_connection() if own else self._db.transaction()
        with batch_scope as conn:
            known = self._existing_items(conn, {p.item.item_id for p in batch})
            accepted: list[_Pending[domain.Interaction]] = []
            for pending in batch:
                # A SEARCH event names no item: its query is in the metadata.
                if pending.item.item_id in known or pending.item.type == "SEARCH":
                    accepted.append(pending)
                else:
                    pending.error = NotFound(
                        f"item_id {pending.item.item_id!r} is not in the catalogue"
                    )
            # Rows in event_id order: concurrent batches then lock keys in one order (no
            # deadlock when the same event_id is logged through two batches at once).
            events = sorted((p.item for p in accepted), key=lambda e: e.event_id)
            # On PostgreSQL the statement also announces the users of the events it stored.
            stored = queries.insert_new_interactions(conn, events, now)
        self._changed({e.user_id for e in events if e.event_id in stored})
        # Committed: now the answers can be given. The first of repeated ids in one batch is the
        # one stored; the rest are duplicates of it.
        answered: set[str] = set()
        for pending in accepted:
            event_id = pending.item.event_id
            pending.duplicate = event_id not in stored or event_id in answered
            answered.add(event_id)


class FeedbackWriter(GroupCommitter[domain.Feedback]):
    """SubmitFeedback's group commit: per-item NOT_FOUND, acknowledged only after commit,
    stored once per ``feedback_id`` (a retried call is a duplicate, as for interactions)."""

    name = "feedback-writer"
    what = "feedback"

    def record(self, feedback: domain.Feedback) -> tuple[tuple[str, str] | None, bool]:
        """Store ``feedback``; raises NotFound for an unknown item, Unavailable on an outage.

        Returns the (algorithm, model_version) of the stored impression its ``recset_id``
        names, for lists whose id is no attribution token (discovery shelves, search
        results; a token carries its own, ``recset``, and is not looked up); and whether its
        ``feedback_id`` was already stored (nothing was written).
        """
        pending = self.submit(feedback)
        return pending.attribution, pending.duplicate

    def _store(self, batch: Sequence[_Pending[domain.Feedback]]) -> None:
        now = self._clock()
        with self._db.transaction() as conn:
            known = self._existing_items(conn, {p.item.item_id for p in batch})
            sources = queries.impression_sources(
                conn, {p.item.recset_id for p in batch if not recset.is_token(p.item.recset_id)}
            )
            for pending in batch:
                pending.attribution = sources.get(pending.item.recset_id)
            accepted = []
            for pending in batch:
                if pending.item.item_id in known:
                    accepted.append(pending.item)
                else:
                    pending.error = NotFound(
                        f"item_id {pending.item.item_id!r} is not in the catalogue"
                    )
            queries.ensure_users(conn, (f.user_id for f in accepted), now)
            # Per-user locks, as training takes them: a user's stored top-N is never updated
            # by two transactions in opposite orders (no deadlock).
            queries.lock_users(conn, (f.user_id for f in accepted))
            stored = queries.record_feedback_batch(
                conn, sorted(accepted, key=lambda f: (f.user_id, f.item_id)), now
            )
            changed = {f.user_id for f in accepted if f.feedback_id in stored}
            queries.notify_changed(conn, changed)
        self._changed(changed)
        answered: set[str] = set()
        for pending in batch:
            if pending.error is None:
                feedback_id = pending.item.feedback_id
                pending.duplicate = feedback_id not in stored or feedback_id in answered
                answered.add(feedback_id)


class ChurnPredictionWriter(GroupCommitter[domain.ChurnPrediction]):
    """PredictChurn's record of each prediction, committed together for concurrent calls."""

    name = "churn-prediction-writer"
    what = "churn prediction"

    def record(self, prediction: domain.ChurnPrediction) -> None:
        """Store the prediction; raises Unavailable on an outage."""
        self.submit(prediction)

    def _store(self, batch: Sequence[_Pending[domain.ChurnPrediction]]) -> None:
        with self._db.transaction() as conn:
            churn_data.record_predictions(conn, [prediction_row(p.item) for p in batch])
