"""The ranking path as it was before issue 13's memo and trimmed re-ranking, kept verbatim.

``tests/test_ranking_same_lists.py`` holds the engine's lists identical to what this computes:
scoring over the whole catalogue, masking in place, ``top_allowed``'s thresholded argpartition
(whose order among equal scores is argpartition's) and the original re-ranking.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.ranking import (
    _REASONS,
    COLLABORATIVE_IMPOSSIBLE,
    NEG_INF,
    NO_MODEL,
    NOTHING_TO_RECOMMEND,
    ServingSnapshot,
    _candidate_sources,
    _requested_but,
    _why_empty,
    _why_not_personalised,
)
from recgrpc.model.rerank import FRESH_SIGNIFICANT, RerankConfig, Reranked
from recgrpc.model.scoring import scores as score_items

MIN_POOL = 50
POOL_FACTOR = 4


def reference_recommend(
    snap: ServingSnapshot, context: domain.UserContext, query: domain.RecommendationQuery
) -> domain.RecommendationList:
    """``RankingEngine.recommend`` as it was (without the approximate index)."""
    ranking = _recommend(snap, context, query)
    if ranking.items:
        return ranking
    why_empty = NOTHING_TO_RECOMMEND + _why_empty(snap, context, query, ranking.algorithm)
    reason = f"{ranking.fallback_reason}; {why_empty}" if ranking.fallback_reason else why_empty
    return replace(ranking, fallback_reason=reason)


def _recommend(
    snap: ServingSnapshot, context: domain.UserContext, query: domain.RecommendationQuery
) -> domain.RecommendationList:
    model = snap.model
    if query.algorithm == Algorithm.POPULAR or model is None:
        fallback = "" if model is not None else NO_MODEL
        return _ranked(snap, Algorithm.POPULAR, context, query, snap.trending.copy(), fallback)
    has_behaviour = model.model_row(context) is not None or bool(context.recent)
    has_profile = bool(context.preferences or context.attributes)
    sources = _candidate_sources(query.algorithm, has_behaviour, has_profile)
    weights = snap.config.event_weights
    for n, source in enumerate(sources):
        vector = model.user_vector(source, context, snap.catalog.position, weights)
        if vector is None:
            continue
        fallback = ""
        if n > 0 and query.algorithm != Algorithm.AUTO:
            fallback = (
                COLLABORATIVE_IMPOSSIBLE
                if query.algorithm == Algorithm.COLLABORATIVE
                else _requested_but(query.algorithm, "it cannot rank for this user")
            )
        scores = np.empty(len(snap.catalog) + 1, dtype=np.float32)
        score_items(model.items_for(source), vector, out=scores[:-1])
        if model.ease is not None and source != Algorithm.CONTENT:
            model.ease.blend_into(scores[:-1], context, snap.catalog.position, weights)
        unscored = model.unscored_by(source)
        if unscored.size:
            scores[unscored] = NEG_INF
        return _ranked(snap, source, context, query, scores[:-1], fallback)
    why = _why_not_personalised(context, snap.catalog.position)
    if query.algorithm != Algorithm.AUTO:
        why = _requested_but(query.algorithm, why)
    return _ranked(snap, Algorithm.POPULAR, context, query, snap.trending.copy(), why)


def _ranked(
    snap: ServingSnapshot,
    source: Algorithm,
    context: domain.UserContext,
    query: domain.RecommendationQuery,
    scores: npt.NDArray[np.float32],
    fallback: str,
) -> domain.RecommendationList:
    catalog = snap.catalog
    if query.categories:
        scores[~catalog.category_mask(query.categories)] = NEG_INF
    blocked = itertools.chain(
        context.seen_item_ids, context.dismissed_item_ids, query.exclude_item_ids
    )
    scores[catalog.indices(blocked)] = NEG_INF
    result = rerank(
        scores,
        query.limit,
        categories=catalog.categories,
        fresh=snap.freshness,
        fresh_items=snap.fresh_items,
        config=snap.config.rerank,
    )
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


SAMPLE_STEP = 8
"""Every this many scores feed the threshold estimate in ``top_allowed``."""


def top_allowed(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """The ``k`` best finite positions of ``scores``, best first; ``-inf`` marks what may not
    be shown (fewer than ``k`` when fewer are finite).

    A full argpartition over the catalogue costs more than the scoring itself, so a threshold
    is first taken from a strided sample (its 3k/step-th best, which about 3k scores clear) and
    only the scores above it are partitioned. Exact: when at least ``k`` scores clear the
    threshold, every one of the ``k`` best does; otherwise all finite scores are candidates.
    """
    if k <= 0 or scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    candidates = top_candidates(scores, k)
    if candidates.size > k:
        part = np.argpartition(scores[candidates], candidates.size - k)[candidates.size - k :]
        candidates = candidates[part]
    return candidates[np.argsort(-scores[candidates], kind="stable")].astype(np.int64)


def top_candidates(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Ascending positions holding every one of the ``k`` best finite ``scores`` (and all
    that tie with the ``k``-th), from ``top_allowed``'s sampled threshold: about 3k of them on
    a large vector, every finite one when that is too few."""
    n = scores.size
    if n > 16 * SAMPLE_STEP * k:
        sample = scores[::SAMPLE_STEP]
        m = min(sample.size, 3 * k // SAMPLE_STEP + 1)
        threshold = np.partition(sample, sample.size - m)[sample.size - m]
        if threshold > -np.inf:
            candidates = np.flatnonzero(scores >= threshold)
            if candidates.size >= k:
                return candidates
    return np.flatnonzero(scores > -np.inf)


def _best_first(values: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Positions of the ``k`` largest ``values``, best first, equal values in position order
    (as a stable sort of all of them would give, without sorting all of them)."""
    if values.size <= k:
        return (-values).argsort(kind="stable")
    part = values.argpartition(values.size - k)[values.size - k :]
    part.sort()
    return part[(-values[part]).argsort(kind="stable")]


def rerank(
    scores: npt.NDArray[np.float32],
    limit: int,
    *,
    categories: Sequence[Sequence[Hashable]],
    fresh: npt.NDArray[np.float32] | None,
    fresh_items: npt.NDArray[np.int64] | None,
    config: RerankConfig,
) -> Reranked:
    """The ``limit`` best items after freshness boost and diversity penalty.

    ``scores`` holds ``-inf`` for every item that may not be shown (the caller masks in place,
    so no boolean mask is built per request). ``categories`` holds each item's distinct
    categories (as ``CatalogIndex`` keeps them). ``fresh`` is per-item freshness (0..1) and
    ``fresh_items`` the positions where it is significant, both precomputed with the snapshot
    so a request touches only the pool.
    """
    pool_size = max(MIN_POOL, POOL_FACTOR * limit)
    pool = top_allowed(scores, pool_size) if limit > 0 else None
    if pool is None or pool.size == 0:
        return Reranked(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.bool_))
    pool_scores = scores[pool]
    lo, hi = float(pool_scores[-1]), float(pool_scores[0])
    span = hi - lo if hi > lo else 1.0

    bonus_unit = config.freshness_boost * span
    if bonus_unit > 0 and fresh is not None and fresh_items is not None and fresh_items.size:
        # Only fresh items whose boosted score clears the pool's floor can enter it (a masked
        # item's -inf never does).
        raw = scores[fresh_items]
        lifted = raw + bonus_unit * fresh[fresh_items]
        # Every score above the floor is already in the pool; one equal to it may be.
        outside = (lifted > lo) & (raw <= lo)
        extra = fresh_items[outside]
        if extra.size:
            tied = raw[outside] == lo
            if tied.any():
                # Only the pool's entries at its floor can equal a tied candidate.
                members = set(pool[pool_scores == lo].tolist())
                keep = [
                    not (t and p in members)
                    for t, p in zip(tied.tolist(), extra.tolist(), strict=True)
                ]
                extra = extra[np.array(keep, dtype=np.bool_)]
            merged = np.concatenate([pool, extra])
            boosted = scores[merged] + bonus_unit * fresh[merged]
        else:
            merged, boosted = pool, pool_scores + bonus_unit * fresh[pool]
        order = _best_first(boosted, pool_size)
        pool, pool_scores = merged[order], boosted[order].astype(np.float32)
        # In the list because of the boost: not among the unboosted top ``limit`` (the first
        # ``limit`` of ``merged``), and fresh enough to say so.
        is_fresh = (order >= limit) & (fresh[pool] >= FRESH_SIGNIFICANT)
    else:
        is_fresh = np.zeros(pool.size, dtype=np.bool_)

    if config.diversity <= 0 or pool.size <= 1:
        return Reranked(pool[:limit], pool_scores[:limit], is_fresh[:limit])
    picked = _diversify(
        pool,
        pool_scores,
        lo=lo,
        span=span,
        limit=limit,
        categories=categories,
        diversity=config.diversity,
    )
    return Reranked(pool[picked], pool_scores[picked], is_fresh[picked])


def _diversify(
    pool: npt.NDArray[np.int64],
    pool_scores: npt.NDArray[np.float32],
    *,
    lo: float,
    span: float,
    limit: int,
    categories: Sequence[Sequence[Hashable]],
    diversity: float,
) -> npt.NDArray[np.int64]:
    """Greedy MMR: repeatedly take the best score minus the repeated-category penalty.

    An item's penalty is ``diversity`` times the number of already-chosen items in each of its
    categories, averaged over its categories. Penalties only grow, so a lazy greedy over a heap
    is exact: the popped item's stale value bounds every other item's current one, and it is
    taken when its own value is still current (otherwise pushed back re-valued). Only the few
    items near the top are ever re-valued, instead of every item sharing a picked category.
    Equal values go to the earlier pool position, like argmax.
    """
    base = ((pool_scores.astype(np.float64) - lo) / span).tolist()
    item_categories = [categories[p] for p in pool.tolist()]
    heap = [(-b, j) for j, b in enumerate(base)]
    heapq.heapify(heap)
    counts: dict[Hashable, int] = {}
    chosen: list[int] = []
    while heap and len(chosen) < limit:
        neg_value, j = heapq.heappop(heap)
        cats = item_categories[j]
        value = base[j]
        if cats:
            value -= diversity / len(cats) * sum(counts.get(c, 0) for c in cats)
        if value == -neg_value:
            chosen.append(j)
            for c in cats:
                counts[c] = counts.get(c, 0) + 1
        else:
            heapq.heappush(heap, (-value, j))
    return np.array(chosen, dtype=np.int64)
