"""Bounded waits for the database on the request path: a small worker pool with a deadline per
call, and a circuit breaker that answers at once while the database is known to be stalled.

A stalled database (bytes stop flowing; nothing is closed) blocks a driver call for as long
as the stall lasts: no exception, no timeout the server can see. Run on an RPC thread, every
such call would take a thread with it until none is left for anything, the health check
included. Here request-path database work runs on the guard's own threads; the RPC thread waits
at most ``timeout`` and then answers from memory or with UNAVAILABLE, while the stuck worker
finishes (or fails) whenever the database does. After ``failures`` timeouts or outages in a row
the breaker opens: calls fail at once for ``reset_seconds``, then one call probes the database
and its success closes the breaker again.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import TypeVar

from recgrpc.server.errors import DatabaseStalled, is_database_outage

log = logging.getLogger(__name__)

T = TypeVar("T")


class CircuitBreaker:
    """Closed (calls go through), open (calls refused) or half-open (one probe goes through)."""

    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.reset_seconds = reset_seconds
        self.clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        """Whether a call may try the database now (while open, one probe per reset period)."""
        if self._opened_at is None:  # the common case, without the lock
            return True
        with self._lock:
            if self._opened_at is None:
                return True
            if self._probing or self.clock() - self._opened_at < self.reset_seconds:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        if self._opened_at is None and self._failures == 0:
            return
        with self._lock:
            if self._opened_at is not None:
                log.info("database answering again: circuit closed")
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._opened_at is not None:
                self._opened_at = self.clock()  # the probe failed: wait another period
            elif self._failures >= self.threshold:
                self._opened_at = self.clock()
                log.warning(
                    "database not answering (%d calls in a row): circuit open, calls answer "
                    "from memory or UNAVAILABLE at once; probing every %.1fs",
                    self._failures,
                    self.reset_seconds,
                )


class DatabaseGuard:
    """Runs request-path database work with a deadline (see the module docstring)."""

    def __init__(self, workers: int, timeout: float, breaker: CircuitBreaker) -> None:
        self.timeout = timeout
        self.breaker = breaker
        self._slots = threading.BoundedSemaphore(workers)
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")

    def run(self, work: Callable[[], T], timeout: float | None = None) -> T:
        """``work()`` on a database worker; raises DatabaseStalled when it is not done within
        ``timeout`` (default: the guard's), waiting for a free worker included, or at once
        while the circuit is open."""
        if not self.breaker.allow():
            raise DatabaseStalled()
        budget = self.timeout if timeout is None else max(timeout, 0.0)
        started = time.monotonic()
        # Busy workers are waited for within the budget; all stuck is a stall like any other.
        if not self._slots.acquire(timeout=budget):
            self.breaker.failure()
            raise DatabaseStalled()
        try:
            # In the caller's context: its trace span and request id go along.
            future = self._pool.submit(contextvars.copy_context().run, self._call, work)
        except RuntimeError:  # shut down
            self._slots.release()
            raise DatabaseStalled("the server is shutting down; retry") from None
        try:
            result = future.result(max(budget - (time.monotonic() - started), 0.0))
        except futures.TimeoutError:
            self.breaker.failure()
            raise DatabaseStalled() from None
        except Exception as exc:
            if is_database_outage(exc):
                self.breaker.failure()
            else:  # the database answered (a constraint, a missing row): it is there
                self.breaker.success()
            raise
        self.breaker.success()
        return result

    def _call(self, work: Callable[[], T]) -> T:
        try:
            return work()
        finally:
            self._slots.release()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["CircuitBreaker", "DatabaseGuard", "DatabaseStalled"]


def bounded(guard: DatabaseGuard | None, work: Callable[[], T]) -> T:
    """``work()`` within the request's database budget, when a guard is set."""
    return work() if guard is None else guard.run(work)
