"""The users' contexts GetRecommendations ranks from, cached in the server process.

A context (history, dismissals, preferences, attributes, plus the matches of recent searches)
is what ``db.serving.load_user_context`` and ``SearchIndexKeeper.with_searches`` read; reading it
is most of a warm call's database work. Entries are dropped:

- by this process's own writes, right after their commit and before the caller is answered
  (the group-commit writers, DeleteUser, UpsertUsers call ``evict``), so whoever acknowledged a
  dismissal never serves the dismissed item again;
- by other processes' writes, through the database's change feed (``db.change_feed``: LISTEN /
  NOTIFY on PostgreSQL; ``db.sqlite_feed``: a changed-users table polled every 0.2 s on a
  SQLite file), within the notification's delivery time;
- after ``ttl`` seconds in any case (short where there is no change feed: in-memory SQLite).

A read that started before a write and finishes after it must not put its (older) context back:
each load holds a ticket that ``evict`` of its user (or ``clear``) revokes, and only a load whose
ticket is still valid is stored. While the change feed is down (``suspend``) nothing is cached
or served from the cache: every call reads the database until the feed listens again
(``resume``, which clears what might have been missed).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db.dialect import ChangeFeed
from recgrpc.model.user_memo import APPROXIMATE_BYTES as MEMO_BYTES
from recgrpc.model.user_memo import UserMemo

# Rough sizes in bytes, for the memory bound: a history row is an item id string, its slot in
# the seen set, and for the recent ones a RecentInteraction with its time and value.
_BASE_BYTES = 600
_SEEN_BYTES = 120
_RECENT_BYTES = 220
_LABEL_BYTES = 150


def approximate_bytes(context: domain.UserContext) -> int:
    """What a cached context and its ranking memo hold in memory, roughly (no object walk on
    the request path)."""
    labels = len(context.dismissed_item_ids) + len(context.preferences) + len(context.attributes)
    return (
        _BASE_BYTES
        + MEMO_BYTES
        + _SEEN_BYTES * len(context.seen_item_ids)
        + _RECENT_BYTES * len(context.recent)
        + _LABEL_BYTES * labels
    )


@dataclass(slots=True)
class _Entry:
    context: domain.UserContext
    expires: float
    size: int
    memo: UserMemo


@dataclass(frozen=True, slots=True)
class Cached:
    """A looked-up context and the ranking memo kept with it (model.user_memo): dropped with
    the entry, so whatever evicts the context forgets what ranking remembered of it. The memo
    is None when the context is not cached (the cache is off, or a write raced the read)."""

    context: domain.UserContext
    memo: UserMemo | None


@dataclass(slots=True)
class CacheCounts:
    """What the cache did since it started (exported as metrics)."""

    hits: int = 0
    misses: int = 0
    bypassed: int = 0
    evicted: int = 0


class ContextCache:
    """Thread-safe LRU of user contexts bounded by estimated bytes, with expiry and eviction.

    ``max_bytes`` 0 disables it (every ``get`` loads). ``serving`` False starts it suspended,
    for a process whose change feed is not listening yet.
    """

    def __init__(
        self,
        max_bytes: int,
        ttl: float,
        *,
        serving: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        # user -> tickets of the loads in flight that may still store what they read.
        self._loads: dict[str, set[int]] = {}
        self._tickets = itertools.count()
        self._serving = serving and max_bytes > 0
        self._lock = threading.Lock()
        self.counts = CacheCounts()
        self.feed: ChangeFeed | None = None

    @property
    def serving(self) -> bool:
        return self._serving

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._entries

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, user_id: str, load: Callable[[], domain.UserContext]) -> domain.UserContext:
        """The cached context of ``user_id``, or ``load()``'s (stored unless a write of this
        user, a clear or a suspension happened while it ran)."""
        return self.lookup(user_id, load).context

    def lookup(self, user_id: str, load: Callable[[], domain.UserContext]) -> Cached:
        """``get``, with the memo kept with the context."""
        started = self._clock()
        with self._lock:
            if not self._serving:
                self.counts.bypassed += 1
                ticket = -1
            else:
                entry = self._entries.get(user_id)
                if entry is not None:
                    if entry.expires > started:
                        self._entries.move_to_end(user_id)
                        self.counts.hits += 1
                        return Cached(entry.context, entry.memo)
                    self._drop(user_id)
                self.counts.misses += 1
                ticket = next(self._tickets)
                self._loads.setdefault(user_id, set()).add(ticket)
        try:
            context = load()
        except BaseException:
            if ticket >= 0:
                with self._lock:
                    self._revoke(user_id, ticket)
            raise
        if ticket >= 0:
            with self._lock:
                if self._revoke(user_id, ticket):
                    # Expiry counts from the read's start: what it saw is at least that old.
                    return Cached(context, self._store(user_id, context, started + self.ttl))
        return Cached(context, None)

    def evict(self, user_ids: Iterable[str]) -> None:
        """Forget these users' contexts, and make loads of them in flight not store theirs."""
        with self._lock:
            for user_id in user_ids:
                self._loads.pop(user_id, None)
                if user_id in self._entries:
                    self._drop(user_id)
                    self.counts.evicted += 1

    def clear(self) -> None:
        """Forget everything (and revoke every load in flight)."""
        with self._lock:
            self._clear()

    def suspend(self) -> None:
        """Stop caching until ``resume``: the change feed is down, writes may go unseen."""
        with self._lock:
            self._serving = False
            self._clear()

    def resume(self) -> None:
        """Cache again, from empty: the change feed listens again (and may have missed some)."""
        with self._lock:
            self._clear()
            self._serving = self.max_bytes > 0

    # -- as the change feed's listener (db.dialect.ChangeListener) -------------------------

    def changed(self, user_ids: Sequence[str]) -> None:
        self.evict(user_ids)

    def listening(self) -> None:
        self.resume()

    def lost(self) -> None:
        self.suspend()

    def close(self) -> None:
        """Stop the change feed, if any; the cache stays as it is (the server is stopping)."""
        if self.feed is not None:
            self.feed.close()

    def _clear(self) -> None:
        self._entries.clear()
        self._loads.clear()
        self._bytes = 0

    def _revoke(self, user_id: str, ticket: int) -> bool:
        """Drop the ticket; True when it was still valid."""
        tickets = self._loads.get(user_id)
        if tickets is None or ticket not in tickets:
            return False
        tickets.discard(ticket)
        if not tickets:
            del self._loads[user_id]
        return True

    def _store(self, user_id: str, context: domain.UserContext, expires: float) -> UserMemo | None:
        size = approximate_bytes(context)
        if size > self.max_bytes:
            return None
        if user_id in self._entries:
            self._drop(user_id)
        memo = UserMemo()
        self._entries[user_id] = _Entry(context, expires, size, memo)
        self._bytes += size
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        return memo if user_id in self._entries else None

    def _drop(self, user_id: str) -> None:
        entry = self._entries.pop(user_id)
        self._bytes -= entry.size


class CacheCollector(Collector):
    """The cache's counters and size for Prometheus, read when it scrapes."""

    def __init__(self, cache: ContextCache) -> None:
        self._cache = cache

    def collect(self) -> Iterable[Metric]:
        cache, counts = self._cache, self._cache.counts
        lookups = CounterMetricFamily(
            "recgrpc_context_cache_lookups",
            "User-context lookups by GetRecommendations: hit, miss (read and cached), bypassed "
            "(read: the cache is off, its change feed down or its size 0).",
            labels=["result"],
        )
        for result, value in (
            ("hit", counts.hits), ("miss", counts.misses), ("bypassed", counts.bypassed)
        ):  # fmt: skip
            lookups.add_metric([result], value)
        yield lookups
        yield CounterMetricFamily(
            "recgrpc_context_cache_evictions",
            "Cached user contexts dropped because a write changed them.",
            value=counts.evicted,
        )
        yield GaugeMetricFamily(
            "recgrpc_context_cache_bytes", "Estimated memory of the cached contexts.", cache.bytes
        )
        yield GaugeMetricFamily(
            "recgrpc_context_cache_serving",
            "1 while the cache serves, 0 while it is off (change feed down, or disabled).",
            value=1.0 if cache.serving else 0.0,
        )

    def describe(self) -> Iterable[Metric]:
        return []  # registering calls describe(); an empty answer avoids an early collect()


def open_context_cache(settings: Settings, db: Database) -> ContextCache:
    """The server's cache of user contexts, with ``db``'s change feed when it has one.

    With a feed (PostgreSQL, a SQLite file), entries live ``context_cache_notified_ttl_seconds``
    and the cache serves only while the feed listens; without, ``context_cache_ttl_seconds``.
    """
    size = int(settings.context_cache_megabytes * 2**20)
    cache = ContextCache(size, settings.context_cache_notified_ttl_seconds, serving=False)
    if size == 0:
        return cache
    cache.feed = db.change_feed(cache)  # resumes the cache once it listens
    if cache.feed is None:
        cache.ttl = settings.context_cache_ttl_seconds
        cache.resume()
    return cache
