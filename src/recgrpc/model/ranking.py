"""The ranking engine the server calls: picks a source per request and ranks the catalogue.

Sources: HYBRID (identity + features), COLLABORATIVE (behaviour only), CONTENT (features only;
ranks items nobody touched), POPULAR (trending). AUTO picks trending for a user with nothing,
CONTENT for a user with preferences only and HYBRID otherwise. When a requested personalised
source is impossible for this user, the next meaningful one is used and ``fallback_reason``
says why. Scoring is one matrix-vector product over precomputed float32 item representations
into a reused per-thread buffer with a spare slot past the catalogue (or, for large catalogues,
re-scoring of an approximate index's candidates: model.approximate), masked in place with -inf
(unknown ids mask the spare slot), then a thresholded argpartition and re-ranking of a small
pool (model.rerank). A cached context's memo (model.user_memo) skips what it already did.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.domain import Algorithm
from recgrpc.model.approximate import approximate
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.memo_pool import rank_keeping, rerank_from
from recgrpc.model.popular import top_trending, trending_order
from recgrpc.model.ranking_reasons import (
    _candidate_sources,
    _requested_but,
    _why_empty,
    _why_not_personalised,
)
from recgrpc.model.representations import ModelView
from recgrpc.model.rerank import (
    FRESH_REASON,
    FRESH_SIGNIFICANT,
    RerankConfig,
    Reranked,
    freshness,
    rerank,
)
from recgrpc.model.scoring import scores as score_items
from recgrpc.model.user_memo import MemoState, UserMemo, query_key
from recgrpc.model.weights import EventWeights

NEG_INF = np.float32(-np.inf)


TRENDING_REASON = "trending"
NO_MODEL = "no trained model is active"
COLLABORATIVE_IMPOSSIBLE = "collaborative requested, but no history of this user is in the model"
NOTHING_TO_RECOMMEND = "nothing to recommend: "
SOURCE_REASON = {
    Algorithm.HYBRID: "hybrid",
    Algorithm.COLLABORATIVE: "collaborative",
    Algorithm.CONTENT: "content",
    Algorithm.POPULAR: TRENDING_REASON,
}
_REASONS = {source: (reason, FRESH_REASON) for source, reason in SOURCE_REASON.items()}
"""Per source, an item's reason indexed by whether the freshness boost brought it in."""
_SPAN_ATTRIBUTES: Mapping[Algorithm, Mapping[str, str]] = {
    source: {"recgrpc.algorithm": source.value} for source in Algorithm
}


@dataclass(frozen=True)
class RankingConfig:
    """Serving knobs taken from Settings when the snapshot is built."""

    rerank: RerankConfig = field(default_factory=RerankConfig)
    event_weights: EventWeights = field(default_factory=EventWeights)

    @classmethod
    def from_settings(cls, settings: Settings) -> RankingConfig:
        return cls(
            rerank=RerankConfig(
                diversity=settings.diversity,
                freshness_boost=settings.freshness_boost,
                freshness_half_life_days=settings.freshness_half_life_days,
            ),
            event_weights=EventWeights.of(settings),
        )


@dataclass(frozen=True)
class ServingSnapshot:
    """Everything ranking reads, swapped as one object so requests never see a half-update."""

    catalog: CatalogIndex
    trending: npt.NDArray[np.float32]
    built_at: datetime
    model: ModelView | None = None
    freshness: npt.NDArray[np.float32] | None = None
    fresh_items: npt.NDArray[np.int64] | None = None
    """Positions whose freshness is significant (the only ones the boost can lift)."""
    config: RankingConfig = field(default_factory=RankingConfig)
    rejected_model_version: str = ""
    """An active model version that failed to load; not retried until it changes."""
    catalog_stamp: object = None
    """What the catalogue looked like when read (``db.queries.catalogue_stamp``); an unchanged
    stamp lets the next refresh keep this catalogue instead of reading every item again."""

    @classmethod
    def empty(cls, now: datetime) -> ServingSnapshot:
        catalog = CatalogIndex.build([])
        return cls(catalog=catalog, trending=np.zeros(0, dtype=np.float32), built_at=now)

    @classmethod
    def assemble(
        cls,
        catalog: CatalogIndex,
        trending: npt.NDArray[np.float32],
        built_at: datetime,
        *,
        model: ModelView | None,
        config: RankingConfig,
        rejected_model_version: str = "",
        catalog_stamp: object = None,
    ) -> ServingSnapshot:
        """A snapshot with item freshness precomputed as of ``built_at``."""
        if model is not None and model.hybrid.shape[0] != len(catalog):
            raise ValueError("model representations are not aligned with the catalogue")
        fresh = freshness(
            catalog.created_at, built_at.timestamp(), config.rerank.freshness_half_life_days
        )
        return cls(
            catalog=catalog,
            trending=trending,
            built_at=built_at,
            model=model,
            freshness=fresh,
            fresh_items=np.flatnonzero(fresh >= FRESH_SIGNIFICANT).astype(np.int64),
            config=config,
            rejected_model_version=rejected_model_version,
            catalog_stamp=catalog_stamp,
        )

    @property
    def model_version(self) -> str:
        return "" if self.model is None else self.model.version


def mask_blocked(
    scores: npt.NDArray[np.float32],
    catalog: CatalogIndex,
    context: domain.UserContext,
    query: domain.RecommendationQuery,
    *,
    spare: bool = False,
) -> None:
    """Set ``-inf`` in place wherever ``allowed_mask`` is False (what ranking reads). With
    ``spare``, ``scores`` has one slot past the catalogue that unknown ids mark instead of
    being filtered out."""
    n = len(catalog)
    if query.categories:
        np.copyto(scores[:n], NEG_INF, where=~catalog.category_mask(query.categories))
    blocked = itertools.chain(
        context.seen_item_ids, context.dismissed_item_ids, query.exclude_item_ids
    )
    scores[catalog.positions_or(blocked, n) if spare else catalog.indices(blocked)] = NEG_INF


def mask_query(
    full: npt.NDArray[np.float32], catalog: CatalogIndex, query: domain.RecommendationQuery
) -> None:
    """``mask_blocked``'s part of the query alone (category filter, exclusions) on a buffer with
    the spare slot, for scores whose user's own blocked items are masked already."""
    n = len(catalog)
    if query.categories:
        np.copyto(full[:n], NEG_INF, where=~catalog.category_mask(query.categories))
    if query.exclude_item_ids:
        full[catalog.positions_or(query.exclude_item_ids, n)] = NEG_INF


StepSpan = Callable[[str, Mapping[str, str]], AbstractContextManager[object]]
"""Opens a span around one step of a ranking: its name (``recgrpc.score``, ``recgrpc.rerank``)
and attributes. The server passes ``recgrpc.tracing.span``; this package never traces itself."""
_UNTRACED = nullcontext()


def untraced(name: str, attributes: Mapping[str, str]) -> AbstractContextManager[object]:
    return _UNTRACED


class RankingEngine:
    """Serves lists from the current snapshot. Thread-safe: readers take one reference."""

    def __init__(self, snapshot: ServingSnapshot, span: StepSpan = untraced) -> None:
        self._snapshot = snapshot
        self._span = span
        self._local = threading.local()
        self._popular = trending_order(snapshot, None)

    @property
    def snapshot(self) -> ServingSnapshot:
        return self._snapshot

    def swap(self, snapshot: ServingSnapshot) -> None:
        self._popular = trending_order(snapshot, self._popular)  # sorted before it serves
        # A single reference assignment is atomic: in-flight requests keep the old snapshot.
        self._snapshot = snapshot

    def recommend(
        self,
        context: domain.UserContext,
        query: domain.RecommendationQuery,
        memo: UserMemo | None = None,
    ) -> domain.RecommendationList:
        """The list for ``query``; ``fallback_reason`` says why whenever it is not personalised
        by the source asked for, or is empty. ``memo`` (kept with a cached ``context``) lets
        the next requests for the same context reuse this one's work (model.user_memo)."""
        snap = self._snapshot
        state = None if memo is None else memo.state(context, snap)
        key = None
        if state is not None:
            key = query_key(query)
            known = state.lists.get(key)
            if known is not None:
                return known
        ranking = self._recommend(snap, context, query, state)
        if not ranking.items:
            why = NOTHING_TO_RECOMMEND + _why_empty(snap, context, query, ranking.algorithm)
            why = f"{ranking.fallback_reason}; {why}" if ranking.fallback_reason else why
            ranking = replace(ranking, fallback_reason=why)
        if state is not None and key is not None:
            state.remember(key, ranking)
        return ranking

    def _scores_buffer(self, n: int) -> npt.NDArray[np.float32]:
        """This thread's reusable score vector: scoring writes into it, masking sets -inf. It is
        a view of the first ``n`` slots of a buffer with one more (``mask_blocked(spare=True)``)."""
        buffer: npt.NDArray[np.float32] | None = getattr(self._local, "scores", None)
        if buffer is None or buffer.size != n:
            buffer = np.empty(n + 1, dtype=np.float32)[:n]
            self._local.scores = buffer
        return buffer

    def _recommend(
        self,
        snap: ServingSnapshot,
        context: domain.UserContext,
        query: domain.RecommendationQuery,
        state: MemoState | None,
    ) -> domain.RecommendationList:
        model = snap.model
        if query.algorithm == Algorithm.POPULAR or model is None:
            fallback = "" if model is not None else NO_MODEL
            return self._trending(snap, context, query, fallback, state)
        has_behaviour = model.model_row(context) is not None or bool(context.recent)
        has_profile = bool(context.preferences or context.attributes)
        sources = _candidate_sources(query.algorithm, has_behaviour, has_profile)
        weights = snap.config.event_weights
        for n, source in enumerate(sources):
            if state is not None and source in state.vectors:
                vector = state.vectors[source]
            else:
                vector = model.user_vector(source, context, snap.catalog.position, weights)
                if state is not None:
                    state.vectors[source] = vector
            if vector is None:
                continue
            fallback = ""
            if n > 0 and query.algorithm != Algorithm.AUTO:  # AUTO's second pick is no fallback
                fallback = (
                    COLLABORATIVE_IMPOSSIBLE
                    if query.algorithm == Algorithm.COLLABORATIVE
                    else _requested_but(query.algorithm, "it cannot rank for this user")
                )
            picked = approximate(snap, source, context, query, vector)  # large catalogues
            if picked is not None:
                return _listed(snap, source, picked, fallback)
            remembered = self._from_memo(snap, source, query, state, fallback)
            if remembered is not None:
                return remembered
            scores = self._scores_buffer(len(snap.catalog))
            with self._span("recgrpc.score", _SPAN_ATTRIBUTES[source]):
                # BLAS sgemv into the reused buffer; the server pins BLAS to one thread
                # (``server.app``), since its worker threads would only spin against the RPC
                # threads for a single matrix-vector product.
                score_items(model.items_for(source), vector, out=scores)
                if model.ease is not None and source != Algorithm.CONTENT:
                    model.ease.blend_into(scores, context, snap.catalog.position, weights)
                # Items this source cannot score (never trained on, no known feature).
                unscored = model.unscored_by(source)
                if unscored.size:
                    scores[unscored] = NEG_INF
            return self._ranked(
                snap, source, context, query, scores, fallback=fallback, state=state
            )
        why = _why_not_personalised(context, snap.catalog.position)
        if query.algorithm != Algorithm.AUTO:
            why = _requested_but(query.algorithm, why)
        return self._trending(snap, context, query, why, state)

    def _trending(
        self,
        snap: ServingSnapshot,
        context: domain.UserContext,
        query: domain.RecommendationQuery,
        fallback: str,
        state: MemoState | None,
    ) -> domain.RecommendationList:
        picked = top_trending(self._popular, snap, context, query)  # large catalogues
        if picked is not None:
            return _listed(snap, Algorithm.POPULAR, picked, fallback)
        remembered = self._from_memo(snap, Algorithm.POPULAR, query, state, fallback)
        if remembered is not None:
            return remembered
        scores = self._scores_buffer(len(snap.catalog))
        np.copyto(scores, snap.trending)
        return self._ranked(
            snap, Algorithm.POPULAR, context, query, scores, fallback=fallback, state=state
        )

    def _ranked(
        self,
        snap: ServingSnapshot,
        source: Algorithm,
        context: domain.UserContext,
        query: domain.RecommendationQuery,
        scores: npt.NDArray[np.float32],
        *,
        fallback: str,
        state: MemoState | None,
    ) -> domain.RecommendationList:
        full = scores.base
        assert isinstance(full, np.ndarray)  # the view of _scores_buffer
        catalog, config = snap.catalog, snap.config.rerank
        result = None
        if state is None:
            mask_blocked(full, catalog, context, query, spare=True)
        elif state.blocked is None:
            blocked = itertools.chain(context.seen_item_ids, context.dismissed_item_ids)
            state.blocked = catalog.positions_or(blocked, len(catalog))
        with self._span("recgrpc.rerank", _SPAN_ATTRIBUTES[source]):
            if state is not None:
                # The user's own masking first, remembered as the source's pool; then the
                # query's, when the pool cannot decide it.
                full[state.blocked] = NEG_INF
                result = rank_keeping(
                    state.pools, source, scores, query, catalog=catalog, fresh=snap.freshness,
                    fresh_items=snap.fresh_items, config=config,
                )  # fmt: skip
                if result is None:
                    mask_query(full, catalog, query)
            if result is None:
                result = rerank(
                    scores, query.limit, categories=catalog.categories, fresh=snap.freshness,
                    fresh_items=snap.fresh_items, config=config,
                )  # fmt: skip
        return _listed(snap, source, result, fallback)

    def _from_memo(
        self,
        snap: ServingSnapshot,
        source: Algorithm,
        query: domain.RecommendationQuery,
        state: MemoState | None,
        fallback: str,
    ) -> domain.RecommendationList | None:
        """The list ranked from the memo's pool of ``source``; None when there is none or it
        cannot decide this query's list for certain."""
        pool = None if state is None else state.pools.get(source)
        if pool is None:
            return None
        with self._span("recgrpc.rerank", _SPAN_ATTRIBUTES[source]):
            result = rerank_from(pool, snap.catalog, query, snap.freshness, snap.config.rerank)
        if result is None:
            return None
        return _listed(snap, source, result, fallback)


def _listed(
    snap: ServingSnapshot, source: Algorithm, result: Reranked, fallback: str
) -> domain.RecommendationList:
    reasons, ids, scored = _REASONS[source], snap.catalog.item_ids, domain.ScoredItem
    items = [
        scored(ids[i], s, reasons[fresh])
        for i, s, fresh in zip(
            result.indices.tolist(), result.scores.tolist(), result.fresh.tolist(), strict=True
        )
    ]
    return domain.RecommendationList(
        items=items,
        algorithm=source,
        model_version="" if source == Algorithm.POPULAR else snap.model_version,
        fallback_reason=fallback,
    )
