"""The handler layer of the discovery RPCs: GetSimilarItems, GetFrequentlyTogether, GetHomeFeed.

Reads the item and the user's context at the edge, ranks with ``model.similar`` and
``model.home_feed`` over the serving snapshot, and records every served list as an impression
(a group commit, like GetRecommendations'), so feedback and click-through work the same way.
The neighbour artifact of the active recommender is loaded by the refresher, never by a request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, discovery, queries
from recgrpc.errors import NotFound, Unavailable
from recgrpc.model.home_feed import HomeFeedQuery, build_feed, liked_anchor
from recgrpc.model.ranking import RankingEngine, ServingSnapshot
from recgrpc.model.scoring import scores as score_items
from recgrpc.model.similar import (
    ItemText,
    SimilarityMode,
    rank_similar,
    top_positions,
)
from recgrpc.server.db_guard import DatabaseGuard
from recgrpc.server.discovery_types import (
    DiscoveryList,
    ImpressionWriter,
    ServedFeed,
    SimilarQuery,
    TogetherQuery,
    Unserved,
)
from recgrpc.server.errors import DATABASE_DOWN, is_database_outage
from recgrpc.server.neighbour_keeper import TRENDING_FALLBACK, NeighbourIndexKeeper

log = logging.getLogger(__name__)

NO_RULES = "no frequently-together rules for these items: similar items instead"

T = TypeVar("T")


class Discovery:
    """Domain logic behind the discovery RPCs. Thread-safe; one per server process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        engine: RankingEngine,
        clock: Callable[[], datetime],
        observer: Callable[[str, str, int], None] | None = None,
        *,
        profile: Callable[[Connection, domain.UserContext], domain.UserContext] | None = None,
        guard: DatabaseGuard | None = None,
    ) -> None:
        """``profile`` adds to a user's context what else shapes their taste (their searches,
        see ``server.search_history``); the home feed ranks with it."""
        self.settings = settings
        self.db = db
        self.engine = engine
        self.clock = clock
        self.observer = observer
        self.profile = profile
        self._guard = guard
        self.neighbours = NeighbourIndexKeeper(db)
        self.impressions = ImpressionWriter(
            db, clock, writers=1 if db.is_sqlite else 2, guard=guard
        )

    def close(self) -> None:
        self.impressions.close()

    # -- the neighbour artifact, kept in step with the serving snapshot -------------------

    def refresh(self, snap: ServingSnapshot) -> None:
        """Keep the neighbour table in step with ``snap`` (the refresher calls this)."""
        self.neighbours.refresh(snap)

    # -- GetSimilarItems ------------------------------------------------------------------

    def similar_items(self, query: SimilarQuery) -> DiscoveryList:
        snap = self.engine.snapshot
        return self._serve(query.user_id, query.platform, snap, self._similar(snap, query))

    def preview_similar(self, item_id: str, mode: str, limit: int) -> list[domain.ScoredItem]:
        """What GetSimilarItems would list now, recorded nowhere (the dashboard's inspector);
        ``mode`` is a mode's name in any case. NotFound for an unknown item."""
        query = SimilarQuery(item_id, limit, mode=SimilarityMode(mode.upper()))
        return list(self._similar(self.engine.snapshot, query).items)

    def _similar(self, snap: ServingSnapshot, query: SimilarQuery) -> Unserved:
        item, context, outage = self._read(snap, query.item_id, query.user_id)
        if outage:
            return _down(self._similar_of(snap, query, item, None))
        return self._similar_of(snap, query, item, context)

    def _similar_of(
        self,
        snap: ServingSnapshot,
        query: SimilarQuery,
        item: ItemText,
        context: domain.UserContext | None,
    ) -> Unserved:
        index = self.neighbours.current(snap)
        allowed = self._allowed(snap, context, query.exclude_item_ids, query.categories)
        position = snap.catalog.position.get(item.item_id)
        if position is not None:
            allowed[position] = False  # never the item itself
        if index is None:
            why = self.neighbours.why_none(snap)
            return self._trending(snap, allowed, query.limit, why, "SIMILAR_TRENDING")
        personal = self._personal(snap, context) if context is not None else None
        listed = rank_similar(
            index.sources(item, position), query.mode, allowed, query.limit, personal
        )
        ids = snap.catalog.item_ids
        items = [
            domain.ScoredItem(ids[p], float(s), r)
            for p, s, r in zip(
                listed.positions.tolist(), listed.scores.tolist(), listed.reasons, strict=True
            )
        ]
        source = f"SIMILAR_{listed.mode.value}"
        return Unserved(items, source, snap.model_version, listed.fallback_reason, listed.mode)

    # -- GetFrequentlyTogether ------------------------------------------------------------

    def frequently_together(self, query: TogetherQuery) -> DiscoveryList:
        snap = self.engine.snapshot
        items, context, outage = self._read_many(snap, query.item_ids, query.user_id)
        listed = self._together(snap, query, items, context)
        return self._serve(query.user_id, query.platform, snap, _down(listed) if outage else listed)

    def _together(
        self,
        snap: ServingSnapshot,
        query: TogetherQuery,
        items: list[ItemText],
        context: domain.UserContext | None,
    ) -> Unserved:
        allowed = self._allowed(snap, context, query.exclude_item_ids, query.categories)
        allowed[snap.catalog.indices(query.item_ids)] = False
        index = self.neighbours.current(snap)
        if index is None:
            return self._trending(
                snap, allowed, query.limit, self.neighbours.why_none(snap), "TOGETHER_TRENDING"
            )
        scores = index.together(query.item_ids)
        if scores is not None and (allowed & (scores > 0)).any():
            picked = top_positions(scores, allowed & (scores > 0), query.limit)
            ids = snap.catalog.item_ids
            found = [
                domain.ScoredItem(ids[p], float(scores[p]), "frequently_together")
                for p in picked.tolist()
            ]
            return Unserved(found, "TOGETHER_RULES", snap.model_version)
        # No rule links the basket to anything allowed: the basket's blended neighbours.
        total = np.zeros(len(snap.catalog), dtype=np.float32)
        reasons: dict[int, str] = {}
        for text in items:
            listed = rank_similar(
                index.sources(text, snap.catalog.position.get(text.item_id)),
                SimilarityMode.AUTO,
                allowed,
                query.limit,
            )
            for p, s, r in zip(
                listed.positions.tolist(), listed.scores.tolist(), listed.reasons, strict=True
            ):
                total[p] += s
                reasons.setdefault(p, r)
        picked = top_positions(total, allowed & (total > 0), query.limit)
        if picked.size == 0:
            return self._trending(
                snap,
                allowed,
                query.limit,
                "no frequently-together rules or neighbours for these items" + TRENDING_FALLBACK,
                "TOGETHER_TRENDING",
            )
        ids = snap.catalog.item_ids
        found = [domain.ScoredItem(ids[p], float(total[p]), reasons[p]) for p in picked.tolist()]
        return Unserved(found, "TOGETHER_SIMILAR", snap.model_version, NO_RULES)

    # -- GetHomeFeed ----------------------------------------------------------------------

    def home_feed(self, query: HomeFeedQuery) -> ServedFeed:
        snap = self.engine.snapshot

        def read() -> tuple[domain.UserContext, str | None, dict[str, Any]]:
            with self.db.connection() as conn:
                context = queries.load_user_context(conn, query.user_id)
                if self.profile is not None:
                    context = self.profile(conn, context)
                anchor_id = liked_anchor(context, snap.config.event_weights)
                return (
                    context,
                    anchor_id,
                    discovery.item_texts(conn, [anchor_id] if anchor_id else []),
                )

        outage = False
        try:
            context, anchor_id, texts = self._bounded(read)
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            # From memory, as GetRecommendations does: the shelves anyone would get.
            outage = True
            context, anchor_id, texts = domain.UserContext(query.user_id, known=False), None, {}
        anchor = None
        if anchor_id is not None and anchor_id in texts:
            t = texts[anchor_id]
            anchor = ItemText(t.item_id, t.title, t.categories, t.tags)
        now = self.clock()
        feed = build_feed(
            snap,
            self.neighbours.current(snap),
            context,
            query,
            now=now,
            stale_after_days=self.settings.stale_after_days,
            anchor=anchor,
        )
        recset_ids = [str(uuid.uuid4()) for _ in feed.shelves]
        records = [
            discovery.DiscoveryImpression(
                recset_id,
                query.user_id,
                shelf.source,
                shelf.model_version,
                shelf.fallback_reason,
                [i.item_id for i in shelf.items],
                query.platform,
                now,
            )
            for recset_id, shelf in zip(recset_ids, feed.shelves, strict=True)
        ]
        omitted = feed.omitted
        if outage:
            omitted = [DATABASE_DOWN, *omitted]
        else:
            self._record(records)
        if self.observer is not None:
            for shelf in feed.shelves:
                self.observer(shelf.source, shelf.fallback_reason, len(shelf.items))
        return ServedFeed(feed, recset_ids, now, omitted)

    # -- shared ---------------------------------------------------------------------------

    def _bounded(self, work: Callable[[], T]) -> T:
        """``work()`` within the request's database budget (server.db_guard), when one is set."""
        return work() if self._guard is None else self._guard.run(work)

    def _read(
        self, snap: ServingSnapshot, item_id: str, user_id: str
    ) -> tuple[ItemText, domain.UserContext | None, bool]:
        texts, context, outage = self._read_many(snap, (item_id,), user_id)
        return texts[0], context, outage

    def _read_many(
        self, snap: ServingSnapshot, item_ids: Sequence[str], user_id: str
    ) -> tuple[list[ItemText], domain.UserContext | None, bool]:
        """The items asked about (NotFound for an unknown one), the user's context, and
        whether the database was down: then the items come from memory (the catalogue and the
        neighbour table) and the list is served without the user's history, like
        GetRecommendations'; UNAVAILABLE only for an item memory does not hold."""

        def read() -> tuple[dict[str, Any], domain.UserContext | None]:
            with self.db.connection() as conn:
                found = discovery.item_texts(conn, item_ids)
                missing = [i for i in item_ids if i not in found]
                if missing:
                    raise NotFound(f"item_id {missing[0]!r} is not in the catalogue")
                return found, queries.load_user_context(conn, user_id) if user_id else None

        try:
            found, context = self._bounded(read)
        except NotFound:
            raise
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            return self._from_memory(snap, item_ids), None, True
        texts = [
            ItemText(t.item_id, t.title, t.categories, t.tags) for t in (found[i] for i in item_ids)
        ]
        return texts, context, False

    def _from_memory(self, snap: ServingSnapshot, item_ids: Sequence[str]) -> list[ItemText]:
        index = self.neighbours.current(snap)
        texts = []
        for item_id in item_ids:
            position = snap.catalog.position.get(item_id)
            known = index is not None and item_id in index.artifact_position
            if position is None and not known:
                raise Unavailable("the database is unavailable; retry")
            categories = snap.catalog.categories[position] if position is not None else ()
            texts.append(ItemText(item_id, "", categories, ()))
        return texts

    @staticmethod
    def _allowed(
        snap: ServingSnapshot,
        context: domain.UserContext | None,
        excluded: frozenset[str],
        categories: frozenset[str],
    ) -> npt.NDArray[np.bool_]:
        catalog = snap.catalog
        if categories:
            allowed = catalog.category_mask(categories)
        else:
            allowed = np.ones(len(catalog), dtype=np.bool_)
        blocked = [excluded]
        if context is not None:
            blocked += [context.seen_item_ids, context.dismissed_item_ids]
        for ids in blocked:
            if ids:
                allowed[catalog.indices(ids)] = False
        return allowed

    @staticmethod
    def _personal(
        snap: ServingSnapshot, context: domain.UserContext
    ) -> npt.NDArray[np.float32] | None:
        model = snap.model
        if model is None:
            return None
        weights = snap.config.event_weights
        vector = model.user_vector(domain.Algorithm.HYBRID, context, snap.catalog.position, weights)
        if vector is None:
            return None
        return score_items(model.hybrid, vector)

    @staticmethod
    def _trending(
        snap: ServingSnapshot,
        allowed: npt.NDArray[np.bool_],
        limit: int,
        why: str,
        source: str,
    ) -> Unserved:
        picked = top_positions(snap.trending, allowed & (snap.trending > 0), limit)
        ids = snap.catalog.item_ids
        items = [domain.ScoredItem(ids[p], float(snap.trending[p]), "trending") for p in picked]
        return Unserved(items, source, "", why)

    def _serve(
        self, user_id: str, platform: str, snap: ServingSnapshot, listed: Unserved
    ) -> DiscoveryList:
        now = self.clock()
        served = DiscoveryList(
            recset_id=str(uuid.uuid4()),
            generated_at=now,
            items=listed.items,
            source=listed.source,
            model_version=listed.model_version,
            fallback_reason=listed.fallback_reason,
            mode=listed.mode,
        )
        # Impressions are per user (an anonymous list has no one to attribute it to), and not
        # written while the database is down.
        if user_id and listed.recorded:
            self._record(
                [
                    discovery.DiscoveryImpression(
                        served.recset_id,
                        user_id,
                        served.source,
                        served.model_version,
                        served.fallback_reason,
                        [i.item_id for i in served.items],
                        platform,
                        now,
                    )
                ]
            )
        if self.observer is not None:
            self.observer(served.source, served.fallback_reason, len(served.items))
        return served

    def _record(self, records: list[discovery.DiscoveryImpression]) -> None:
        # A served list is not the caller's write: when the database is down it is dropped.
        try:
            self.impressions.submit(records)
        except Unavailable:
            log.warning("discovery impression not recorded: database unavailable")


def _down(listed: Unserved) -> Unserved:
    """A list served from memory while the database is down: said so, and not recorded."""
    why = (
        DATABASE_DOWN
        if not listed.fallback_reason
        else f"{DATABASE_DOWN}; {listed.fallback_reason}"
    )
    return replace(listed, fallback_reason=why, recorded=False)
