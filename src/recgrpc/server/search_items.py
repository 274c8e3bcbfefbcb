"""SearchItems: text matches from the search index, re-ranked for a known user.

Trending is served when nothing matches; each list served to a user is recorded as an
impression, as recommendation lists are.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, queries, user_history
from recgrpc.domain import Algorithm
from recgrpc.model.ranking import ServingSnapshot, mask_blocked
from recgrpc.model.rerank import top_allowed
from recgrpc.model.scoring import scores as score_items
from recgrpc.model.search import SearchIndex, best_matches, blend
from recgrpc.server.db_guard import DatabaseGuard, bounded
from recgrpc.server.errors import is_database_outage
from recgrpc.server.search_index import SearchIndexKeeper

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    limit: int
    user_id: str = ""
    categories: frozenset[str] = frozenset()
    exclude_seen: bool = False
    platform: str = ""


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


class ItemSearch:
    """SearchItems' logic; one per server, sharing the handlers' database, snapshot and index."""

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
        self._alignment: tuple[SearchIndex, object, npt.NDArray[np.bool_]] | None = None

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
            return bounded(self._guard, read)
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
                bounded(self._guard, write)
            except Exception as exc:
                if not is_database_outage(exc):
                    raise
                log.warning("search list %s not recorded: database unavailable", result.recset_id)
        return result
