"""The handler layer of the discovery RPCs: GetSimilarItems, GetFrequentlyTogether, GetHomeFeed.

Reads the item and the user's context at the edge, ranks with ``model.similar`` and
``model.home_feed`` over the serving snapshot, and records every served list as an impression
(a group commit, like GetRecommendations'), so feedback and click-through work the same way.
The neighbour artifact of the active recommender is loaded by the refresher, never by a request.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, discovery, neighbour_store, queries
from recgrpc.errors import NotFound, Unavailable
from recgrpc.model import neighbour_artifact
from recgrpc.model.home_feed import HomeFeedQuery, build_feed, liked_anchor
from recgrpc.model.ranking import NO_MODEL, RankingEngine, ServingSnapshot
from recgrpc.model.scoring import scores as score_items
from recgrpc.model.similar import (
    ItemText,
    SimilarityIndex,
    SimilarityMode,
    rank_similar,
    top_positions,
)
from recgrpc.server.discovery_types import (
    DiscoveryList,
    ImpressionWriter,
    ServedFeed,
    SimilarQuery,
    TogetherQuery,
    Unserved,
)
from recgrpc.server.errors import is_database_outage

log = logging.getLogger(__name__)

NO_NEIGHBOURS = "the active model has no neighbour table (trained before item neighbours); retrain"
LOADING = "the neighbour table of the newly active model is still loading"
NO_RULES = "no frequently-together rules for these items: similar items instead"
TRENDING_FALLBACK = ": trending instead"


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
    ) -> None:
        """``profile`` adds to a user's context what else shapes their taste (their searches,
        see ``server.search_history``); the home feed ranks with it."""
        self.settings = settings
        self.db = db
        self.engine = engine
        self.clock = clock
        self.observer = observer
        self.profile = profile
        self._index: SimilarityIndex | None = None
        self._index_catalog: object = None
        self._loaded: tuple[str, neighbour_artifact.NeighbourArrays | None] | None = None
        self._lock = threading.Lock()
        self.impressions = ImpressionWriter(db, clock, writers=1 if db.is_sqlite else 2)

    def close(self) -> None:
        self.impressions.close()

    # -- the neighbour artifact, kept in step with the serving snapshot -------------------

    def refresh(self, snap: ServingSnapshot) -> None:
        """Load the active recommender's neighbour artifact when its version changed (the
        refresher calls this after each snapshot swap; requests never read the artifact)."""
        version = snap.model_version
        if self._loaded is not None and self._loaded[0] == version:
            self._current(snap)
            return
        arrays = None
        if version:
            with self.db.reader() as session:
                blob = neighbour_store.load_neighbours(session, version)
            if blob is not None:
                try:
                    arrays = neighbour_artifact.decode(blob)
                except ValueError:
                    log.exception("neighbour table of model %s cannot be loaded", version)
        with self._lock:
            self._loaded = (version, arrays)
            self._index = None
        self._current(snap)

    def _current(self, snap: ServingSnapshot) -> SimilarityIndex | None:
        """The index aligned with ``snap``'s catalogue and model (re-aligned when only the
        catalogue changed); None while no neighbour table of the active model is loaded."""
        index = self._index
        if (
            index is not None
            and self._index_catalog is snap.catalog
            and (index.version == snap.model_version)
        ):
            return index
        loaded = self._loaded
        if loaded is None or loaded[0] != snap.model_version or loaded[1] is None:
            return None
        with self._lock:
            vectors = None if snap.model is None else snap.model.hybrid[:, 1:]
            index = SimilarityIndex.build(loaded[1], snap.catalog, vectors)
            self._index, self._index_catalog = index, snap.catalog
        return index

    # -- GetSimilarItems ------------------------------------------------------------------

    def similar_items(self, query: SimilarQuery) -> DiscoveryList:
        snap = self.engine.snapshot
        item, context = self._read(query.item_id, query.user_id)
        index = self._current(snap)
        allowed = self._allowed(snap, context, query.exclude_item_ids, query.categories)
        position = snap.catalog.position.get(item.item_id)
        if position is not None:
            allowed[position] = False  # never the item itself
        if index is None:
            return self._serve(
                query.user_id,
                query.platform,
                snap,
                self._trending(
                    snap, allowed, query.limit, self._why_none(snap), "SIMILAR_TRENDING"
                ),
            )
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
        served = Unserved(
            items,
            f"SIMILAR_{listed.mode.value}",
            snap.model_version,
            listed.fallback_reason,
            listed.mode,
        )
        return self._serve(query.user_id, query.platform, snap, served)

    # -- GetFrequentlyTogether ------------------------------------------------------------

    def frequently_together(self, query: TogetherQuery) -> DiscoveryList:
        snap = self.engine.snapshot
        items, context = self._read_many(query.item_ids, query.user_id)
        allowed = self._allowed(snap, context, query.exclude_item_ids, query.categories)
        allowed[snap.catalog.indices(query.item_ids)] = False
        index = self._current(snap)
        if index is None:
            return self._serve(
                query.user_id,
                query.platform,
                snap,
                self._trending(
                    snap, allowed, query.limit, self._why_none(snap), "TOGETHER_TRENDING"
                ),
            )
        scores = index.together(query.item_ids)
        if scores is not None and (allowed & (scores > 0)).any():
            picked = top_positions(scores, allowed & (scores > 0), query.limit)
            ids = snap.catalog.item_ids
            found = [
                domain.ScoredItem(ids[p], float(scores[p]), "frequently_together")
                for p in picked.tolist()
            ]
            return self._serve(
                query.user_id,
                query.platform,
                snap,
                Unserved(found, "TOGETHER_RULES", snap.model_version),
            )
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
            return self._serve(
                query.user_id,
                query.platform,
                snap,
                self._trending(
                    snap,
                    allowed,
                    query.limit,
                    "no frequently-together rules or neighbours for these items"
                    + TRENDING_FALLBACK,
                    "TOGETHER_TRENDING",
                ),
            )
        ids = snap.catalog.item_ids
        found = [domain.ScoredItem(ids[p], float(total[p]), reasons[p]) for p in picked.tolist()]
        return self._serve(
            query.user_id,
            query.platform,
            snap,
            Unserved(found, "TOGETHER_SIMILAR", snap.model_version, NO_RULES),
        )

    # -- GetHomeFeed ----------------------------------------------------------------------

    def home_feed(self, query: HomeFeedQuery) -> ServedFeed:
        snap = self.engine.snapshot
        try:
            with self.db.connection() as conn:
                context = queries.load_user_context(conn, query.user_id)
                if self.profile is not None:
                    context = self.profile(conn, context)
                anchor_id = liked_anchor(context, snap.config.event_weights)
                texts = discovery.item_texts(conn, [anchor_id] if anchor_id else [])
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            raise Unavailable("the database is unavailable; retry") from exc
        anchor = None
        if anchor_id is not None and anchor_id in texts:
            t = texts[anchor_id]
            anchor = ItemText(t.item_id, t.title, t.categories, t.tags)
        now = self.clock()
        feed = build_feed(
            snap,
            self._current(snap),
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
        self._record(records)
        if self.observer is not None:
            for shelf in feed.shelves:
                self.observer(shelf.source, shelf.fallback_reason, len(shelf.items))
        return ServedFeed(feed, recset_ids, now, feed.omitted)

    # -- shared ---------------------------------------------------------------------------

    def _why_none(self, snap: ServingSnapshot) -> str:
        if snap.model is None:
            return NO_MODEL + TRENDING_FALLBACK
        loaded = self._loaded
        if loaded is None or loaded[0] != snap.model_version:
            return LOADING + TRENDING_FALLBACK
        return NO_NEIGHBOURS + TRENDING_FALLBACK

    def _read(self, item_id: str, user_id: str) -> tuple[ItemText, domain.UserContext | None]:
        texts, context = self._read_many((item_id,), user_id)
        return texts[0], context

    def _read_many(
        self, item_ids: Sequence[str], user_id: str
    ) -> tuple[list[ItemText], domain.UserContext | None]:
        """The items asked about (NotFound for an unknown one) and the user's context."""
        try:
            with self.db.connection() as conn:
                found = discovery.item_texts(conn, item_ids)
                missing = [i for i in item_ids if i not in found]
                if missing:
                    raise NotFound(f"item_id {missing[0]!r} is not in the catalogue")
                context = queries.load_user_context(conn, user_id) if user_id else None
        except NotFound:
            raise
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            raise Unavailable("the database is unavailable; retry") from exc
        texts = [
            ItemText(t.item_id, t.title, t.categories, t.tags) for t in (found[i] for i in item_ids)
        ]
        return texts, context

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
        if user_id:  # impressions are per user: an anonymous list has no one to attribute to
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
