"""The handler layer of the discovery RPCs: GetSimilarItems, GetFrequentlyTogether, GetHomeFeed.

Reads the item and the user's context at the edge, ranks with ``server.discovery_lists``
(``model.similar``) and ``model.home_feed`` over the serving snapshot, and records every served
list as an impression (a group commit, like GetRecommendations'), so feedback and
click-through work the same way.
The neighbour artifact of the active recommender is loaded by the refresher, never by a request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, discovery
from recgrpc.errors import NotFound, Unavailable
from recgrpc.model.feed_orders import feed_orders
from recgrpc.model.home_feed import HomeFeedQuery, build_feed, liked_anchor
from recgrpc.model.ranking import RankingEngine, ServingSnapshot
from recgrpc.model.similar import (
    ItemText,
    SimilarityMode,
)
from recgrpc.server.db_guard import DatabaseGuard, bounded
from recgrpc.server.discovery_lists import similar_list, together_list
from recgrpc.server.discovery_types import (
    DiscoveryList,
    ImpressionWriter,
    ServedFeed,
    SimilarQuery,
    TogetherQuery,
    Unserved,
)
from recgrpc.server.errors import DATABASE_DOWN, is_database_outage
from recgrpc.server.neighbour_keeper import NeighbourIndexKeeper

log = logging.getLogger(__name__)


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
        context_of: Callable[[str], domain.UserContext],
        guard: DatabaseGuard | None = None,
    ) -> None:
        """``context_of`` is the user's context as GetRecommendations reads it (the process's
        cache, else the database within the request's budget; their searches included, see
        ``server.search_index``); the home feed ranks with it."""
        self.settings = settings
        self.db = db
        self.engine = engine
        self.clock = clock
        self.observer = observer
        self.context_of = context_of
        self._guard = guard
        self.neighbours = NeighbourIndexKeeper(db)
        self.impressions = ImpressionWriter(
            db, clock, writers=1 if db.is_sqlite else 2, guard=guard
        )

    def close(self) -> None:
        self.impressions.close()

    # -- the neighbour artifact, kept in step with the serving snapshot -------------------

    def refresh(self, snap: ServingSnapshot) -> None:
        """Keep the neighbour table in step with ``snap`` (the refresher calls this), and sort
        the home feed's orders of the new snapshot before a request needs them."""
        self.neighbours.refresh(snap)
        feed_orders(snap)

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
        why = self.neighbours.why_none(snap) if index is None else ""
        return similar_list(snap, index, query, item, context, why_none=why)

    # -- GetFrequentlyTogether ------------------------------------------------------------

    def frequently_together(self, query: TogetherQuery) -> DiscoveryList:
        snap = self.engine.snapshot
        items, context, outage = self._read_many(snap, query.item_ids, query.user_id)
        index = self.neighbours.current(snap)
        why = self.neighbours.why_none(snap) if index is None else ""
        listed = together_list(snap, index, query, items, context, why_none=why)
        return self._serve(query.user_id, query.platform, snap, _down(listed) if outage else listed)

    # -- GetHomeFeed ----------------------------------------------------------------------

    def home_feed(self, query: HomeFeedQuery) -> ServedFeed:
        snap = self.engine.snapshot

        def read() -> tuple[domain.UserContext, str | None, dict[str, Any]]:
            context = self.context_of(query.user_id)
            anchor_id = liked_anchor(context, snap.config.event_weights)
            if anchor_id is None:
                return context, None, {}

            def anchor_text() -> dict[str, Any]:
                with self.db.connection() as conn:
                    return discovery.item_texts(conn, [anchor_id])

            return context, anchor_id, bounded(self._guard, anchor_text)

        outage = False
        try:
            context, anchor_id, texts = read()
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

        def read() -> dict[str, Any]:
            with self.db.connection() as conn:
                found = discovery.item_texts(conn, item_ids)
                missing = [i for i in item_ids if i not in found]
                if missing:
                    raise NotFound(f"item_id {missing[0]!r} is not in the catalogue")
                return found

        try:
            found = bounded(self._guard, read)
            # The user as GetRecommendations reads them: from the process's cache on a hit.
            context = self.context_of(user_id) if user_id else None
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
