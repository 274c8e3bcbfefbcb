"""Handlers behind SearchItems, GetUserStats, ListInteractions and ListChurnPredictions, and
the search index the server keeps beside its serving snapshot.

The index is rebuilt by the snapshot refresher whenever the catalogue's stamp changes (and at
start-up, before the server reports SERVING); between a catalogue write and that rebuild,
matches that left the active catalogue are dropped at query time.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, queries, user_history
from recgrpc.domain import Algorithm
from recgrpc.errors import NotFound
from recgrpc.model.ranking import ServingSnapshot, mask_blocked
from recgrpc.model.rerank import top_allowed
from recgrpc.model.scoring import scores as score_items
from recgrpc.model.search import SearchIndex, Synonyms, best_matches, blend
from recgrpc.server import page_tokens
from recgrpc.server.db_guard import DatabaseGuard
from recgrpc.server.errors import is_database_outage

log = logging.getLogger(__name__)

T = TypeVar("T")
SnapshotSource = Callable[[], ServingSnapshot]
Clock = Callable[[], datetime]

NO_MATCHES = "no_search_matches"
SEARCH_REASON = "search"
PERSONAL_REASON = "search_personalised"
TRENDING_REASON = "trending"
SEARCH_ALGORITHM = "SEARCH"
"""How search lists are labelled in impressions (and so in online metrics)."""
PERSONAL_POOL = 100
"""Best text matches re-ranked for a user (the list is cut to the limit afterwards)."""
PROFILE_SEARCHES = 20
"""A user's latest searches that shape their recommendations."""
PROFILE_MATCHES = 3
"""Best matches of each such search folded into the user's vector, like viewed items."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    limit: int
    user_id: str = ""
    categories: frozenset[str] = frozenset()
    exclude_seen: bool = False
    platform: str = ""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """ListInteractions' request: a user's events, optionally since a time, of some types."""

    user_id: str
    page_size: int
    page_token: str = ""
    since: datetime | None = None
    last_days: int = 0
    types: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class SearchHit:
    item_id: str
    score: float
    reason: str
    title: str
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchResult:
    recset_id: str
    hits: Sequence[SearchHit]
    fallback_reason: str
    model_version: str
    generated_at: datetime


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    rows: Sequence[T]
    next_page_token: str


def read_synonyms(path: str) -> Synonyms:
    """The synonyms file named by ``Settings.search_synonyms_file`` (none when empty)."""
    if not path:
        return Synonyms()
    return Synonyms.parse(Path(path).read_text(encoding="utf-8"))


class SearchIndexKeeper:
    """The current search index; rebuilt off the request path when the catalogue changes."""

    def __init__(self, settings: Settings) -> None:
        self.synonyms = read_synonyms(settings.search_synonyms_file)
        self._index = SearchIndex.build([], self.synonyms)
        self._stamp: object = None
        self._built = False
        self._building = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def close(self, timeout: float = 60.0) -> None:
        """Start no more rebuilds and wait for one in progress (it must not outlive the
        server: its database and its log handlers go away)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def index(self) -> SearchIndex:
        return self._index

    def refresh(self, db: Database, snapshot: ServingSnapshot) -> None:
        """Rebuild when the snapshot's catalogue stamp differs from the index's.

        The first build runs here (before the server reports SERVING); later ones on a thread
        of their own, so a large catalogue does not hold up the snapshot refresher, while the
        previous index keeps serving.
        """
        stamp = snapshot.catalog_stamp
        if self._built and stamp == self._stamp:
            return
        if not self._built:
            self._rebuild(db, stamp)
            return
        with self._lock:
            if self._building or self._closed:
                return
            self._building = True
            self._thread = threading.Thread(
                target=self._rebuild, args=(db, stamp), name="recgrpc-search-index", daemon=True
            )
            self._thread.start()

    def _rebuild(self, db: Database, stamp: object) -> None:
        try:
            with db.reader() as session:
                rows = user_history.search_documents(session)
            index = SearchIndex.build(rows, self.synonyms)
            self._index, self._stamp, self._built = index, stamp, True
            log.debug("search index rebuilt: %d items", len(rows))
        except Exception as exc:
            if not self._built:
                raise  # the refresher reports it and tries again
            if not is_database_outage(exc):
                log.exception("search index rebuild failed; keeping the previous one")
        finally:
            self._building = False

    def with_searches(
        self, executor: Session | Connection, context: domain.UserContext
    ) -> domain.UserContext:
        """The context with the best matches of the user's recent searches added as SEARCH
        events, so ranking folds them into the user's vector like items they looked at.

        Reads the queries only for a user whose history holds a search.
        """
        if not any(e.type is domain.InteractionType.SEARCH for e in context.recent):
            return context
        index = self._index
        added: list[domain.RecentInteraction] = []
        for query, at in user_history.recent_searches(executor, context.user_id, PROFILE_SEARCHES):
            scores = index.scores(query)
            for position in best_matches(scores, scores > 0, PROFILE_MATCHES).tolist():
                added.append(
                    domain.RecentInteraction(
                        index.item_ids[position], domain.InteractionType.SEARCH, 0.0, at
                    )
                )
        if not added:
            return context
        return replace(context, recent=(*context.recent, *added))


class SearchAndHistory:
    """The four RPCs' logic; one per server, sharing the handlers' database and snapshot."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        snapshot: SnapshotSource,
        keeper: SearchIndexKeeper,
        clock: Clock,
        *,
        observe: Callable[[str, str, int], None] | None = None,
        guard: DatabaseGuard | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self._guard = guard
        self._snapshot = snapshot
        self.keeper = keeper
        self.clock = clock
        # (source, fallback_reason, items) of each served list, for the discovery metrics.
        self._observe = observe
        self._key = page_tokens.signing_key(settings.page_token_secret, settings.database_url)
        self._alignment: tuple[SearchIndex, object, npt.NDArray[np.bool_]] | None = None

    def _bounded(self, work: Callable[[], T]) -> T:
        """``work()`` within the request's database budget (server.db_guard), when one is set."""
        return work() if self._guard is None else self._guard.run(work)

    # -- SearchItems ---------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> SearchResult:
        snap = self._snapshot()
        index = self.keeper.index
        context = self._context(query.user_id) if query.user_id else None
        allowed = (
            index.category_mask(query.categories)
            if query.categories
            else np.ones(len(index), dtype=np.bool_)
        )
        allowed &= self._live(index, snap)
        if context is not None and query.exclude_seen:
            allowed[index.indices(context.seen_item_ids | context.dismissed_item_ids)] = False
        scores = index.scores(query.text)
        pool_size = PERSONAL_POOL if context is not None else query.limit
        pool = best_matches(scores, allowed, max(pool_size, query.limit))
        if pool.size == 0:
            return self._served(query, self._trending(snap, context, query), NO_MATCHES, "")
        relevance = scores[pool]
        reason, version = SEARCH_REASON, ""
        personal = self._personal_scores(snap, context, [index.item_ids[p] for p in pool])
        if personal is not None and self.settings.search_personal_weight > 0:
            relevance = blend(relevance, personal, self.settings.search_personal_weight)
            order = np.argsort(-relevance, kind="stable")
            pool, relevance = pool[order], relevance[order]
            reason, version = PERSONAL_REASON, snap.model_version
        hits = [
            SearchHit(index.item_ids[p], float(s), reason, index.titles[p], index.categories[p])
            for p, s in zip(
                pool[: query.limit].tolist(), relevance[: query.limit].tolist(), strict=True
            )
        ]
        return self._served(query, hits, "", version)

    def _live(self, index: SearchIndex, snap: ServingSnapshot) -> npt.NDArray[np.bool_]:
        """Which indexed items are still in the serving catalogue (computed once per pair)."""
        cached = self._alignment
        if cached is None or cached[0] is not index or cached[1] is not snap.catalog:
            position = snap.catalog.position
            live = np.fromiter((i in position for i in index.item_ids), np.bool_, len(index))
            cached = self._alignment = (index, snap.catalog, live)
        return cached[2]

    def _context(self, user_id: str) -> domain.UserContext | None:
        def read() -> domain.UserContext:
            with self.db.connection() as conn:
                return self.keeper.with_searches(conn, queries.load_user_context(conn, user_id))

        try:
            return self._bounded(read)
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            return None  # serve plain text relevance while the database is away

    def _personal_scores(
        self, snap: ServingSnapshot, context: domain.UserContext | None, item_ids: list[str]
    ) -> np.ndarray | None:
        model = snap.model
        if context is None or model is None:
            return None
        weights = snap.config.event_weights
        vector = model.user_vector(Algorithm.HYBRID, context, snap.catalog.position, weights)
        if vector is None:
            return None
        positions = snap.catalog.indices(item_ids)
        if positions.size != len(item_ids):
            return None
        scores = score_items(model.hybrid[positions], vector)
        return scores.astype(np.float32)

    def _trending(
        self, snap: ServingSnapshot, context: domain.UserContext | None, query: SearchQuery
    ) -> list[SearchHit]:
        catalog = snap.catalog
        if context is None or not query.exclude_seen:
            context = domain.UserContext(user_id=query.user_id, known=False)
        request = domain.RecommendationQuery(
            user_id=query.user_id, limit=query.limit, categories=query.categories
        )
        scores = snap.trending.copy()
        mask_blocked(scores, catalog, context, request)
        chosen = top_allowed(scores, query.limit)
        index = self.keeper.index
        where = {item_id: i for i, item_id in enumerate(index.item_ids)} if chosen.size else {}
        hits = []
        for position in chosen.tolist():
            item_id = catalog.item_ids[position]
            at = where.get(item_id)
            title = index.titles[at] if at is not None else ""
            hits.append(
                SearchHit(
                    item_id,
                    float(snap.trending[position]),
                    TRENDING_REASON,
                    title,
                    catalog.categories[position],
                )
            )
        return hits

    def _served(
        self, query: SearchQuery, hits: list[SearchHit], fallback: str, version: str
    ) -> SearchResult:
        result = SearchResult(str(uuid.uuid4()), hits, fallback, version, self.clock())
        if self._observe is not None:
            source = hits[0].reason if hits else SEARCH_REASON
            self._observe(source, fallback, len(hits))
        if query.user_id:

            def write() -> None:
                with self.db.writer() as session:
                    queries.ensure_users(session, [query.user_id], result.generated_at)
                    user_history.record_impression(
                        session,
                        recset_id=result.recset_id,
                        user_id=query.user_id,
                        algorithm=SEARCH_ALGORITHM,
                        model_version=version,
                        fallback_reason=fallback,
                        item_ids=[h.item_id for h in hits],
                        platform=query.platform,
                        served_at=result.generated_at,
                    )

            try:
                self._bounded(write)
            except Exception as exc:
                if not is_database_outage(exc):
                    raise
                log.warning("search list %s not recorded: database unavailable", result.recset_id)
        return result

    # -- GetUserStats ----------------------------------------------------------------------------

    def user_stats(self, user_id: str) -> user_history.UserNumbers:
        def read() -> user_history.UserNumbers | None:
            with self.db.reader() as session:
                return user_history.user_numbers(session, user_id)

        numbers = self._bounded(read)
        if numbers is None:
            raise NotFound(f"user {user_id!r} is not known to the service")
        return numbers

    # -- ListInteractions / ListChurnPredictions -------------------------------------------------

    def interactions(self, query: HistoryQuery) -> Page[user_history.EventRow]:
        scope = page_tokens.request_scope(
            "ListInteractions", query.user_id, query.page_size, query.since, query.last_days,
            sorted(query.types),
        )  # fmt: skip
        token = query.page_token
        cursor = page_tokens.decode(self._key, scope, token) if token else None
        since = query.since
        if query.last_days:
            window = self.clock() - timedelta(days=query.last_days)
            since = window if since is None else max(since, window)

        def read() -> list[user_history.EventRow]:
            with self.db.reader() as session:
                return user_history.user_events(
                    session, query.user_id, limit=query.page_size + 1, since=since,
                    types=query.types, cursor=cursor,
                )  # fmt: skip

        rows = self._bounded(read)
        return self._page(rows, query.page_size, scope, lambda r: (r.occurred_at, r.row_id))

    def churn_predictions(
        self, user_id: str, page_size: int, page_token: str
    ) -> Page[user_history.PredictionRow]:
        scope = page_tokens.request_scope("ListChurnPredictions", user_id, page_size)
        cursor = page_tokens.decode(self._key, scope, page_token) if page_token else None

        def read() -> list[user_history.PredictionRow]:
            with self.db.reader() as session:
                return user_history.churn_history(
                    session, user_id, limit=page_size + 1, cursor=cursor
                )

        rows = self._bounded(read)
        return self._page(rows, page_size, scope, lambda r: (r.predicted_at, r.row_id))

    def _page(
        self,
        rows: list[T],
        page_size: int,
        scope: str,
        key: Callable[[T], tuple[datetime, int]],
    ) -> Page[T]:
        if len(rows) <= page_size:
            return Page(rows, "")
        page = rows[:page_size]
        at, row_id = key(page[-1])
        return Page(page, page_tokens.encode(self._key, scope, at, row_id))
