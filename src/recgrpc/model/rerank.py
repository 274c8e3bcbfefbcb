"""Re-ranking after scoring: a freshness boost and an MMR-style category-diversity penalty.

Both work on a small candidate pool (the best few dozen allowed items plus the fresh ones), on
scores rescaled to the pool's span, so the settings mean the same for every source:
``freshness_boost=0.1`` adds up to a tenth of the pool's score range to a brand-new item, and
``diversity=0.2`` costs a candidate a fifth of that range for each already-chosen item of its
category (averaged over the item's categories).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FRESH_REASON = "fresh"
MIN_POOL = 50
POOL_FACTOR = 4
FRESH_SIGNIFICANT = 0.05
"""Freshness (0..1) below this is ignored: the boost it earns is too small to matter."""


@dataclass(frozen=True)
class RerankConfig:
    diversity: float = 0.0
    freshness_boost: float = 0.1
    freshness_half_life_days: float = 14.0


@dataclass(frozen=True)
class Reranked:
    indices: npt.NDArray[np.int64]
    """Catalogue positions, best first."""
    scores: npt.NDArray[np.float32]
    """Score plus freshness bonus (what ordered the pool before the diversity penalty)."""
    fresh: npt.NDArray[np.bool_]
    """True where the freshness boost brought the item into the list."""


def freshness(
    created_at: npt.NDArray[np.float64], now_ts: float, half_life_days: float
) -> npt.NDArray[np.float32]:
    """1 for an item created now, halving every ``half_life_days`` (future dates count as now)."""
    age = np.maximum(0.0, now_ts - created_at)
    return np.exp2(-age / (half_life_days * 86400.0)).astype(np.float32)


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
    return best_of(candidates, scores[candidates], k)[0]


def best_of(
    candidates: npt.NDArray[np.intp], values: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """``top_allowed``'s last step: the ``k`` best of ``candidates`` (``values`` their scores),
    best first, and their scores."""
    if candidates.size > k:
        part = np.argpartition(values, candidates.size - k)[candidates.size - k :]
        candidates, values = candidates[part], values[part]
    order = np.argsort(-values, kind="stable")
    return candidates[order].astype(np.int64), values[order]


def top_candidates(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Ascending positions holding every one of the ``k`` best finite ``scores`` (and all
    that tie with the ``k``-th), from ``top_allowed``'s sampled threshold: about 3k of them on
    a large vector, every finite one when that is too few."""
    return candidates_of(scores, k)[0]


def candidates_of(scores: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.intp], bool]:
    """``top_candidates``, and whether they are every finite score."""
    n = scores.size
    if n > 16 * SAMPLE_STEP * k:
        sample = scores[::SAMPLE_STEP]
        m = min(sample.size, 3 * k // SAMPLE_STEP + 1)
        threshold = np.partition(sample, sample.size - m)[sample.size - m]
        if threshold > -np.inf:
            candidates = np.flatnonzero(scores >= threshold)
            if candidates.size >= k:
                return candidates, False
    return np.flatnonzero(scores > -np.inf), True


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
        return EMPTY
    boosting = fresh is not None and fresh_items is not None and fresh_items.size > 0
    return rerank_pool(
        pool,
        scores[pool],
        limit,
        fresh_items=fresh_items if boosting else None,
        fresh_raw=scores[fresh_items] if boosting else None,
        categories=categories,
        fresh=fresh,
        config=config,
    )


EMPTY = Reranked(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.bool_))


def rerank_pool(
    pool: npt.NDArray[np.int64],
    pool_scores: npt.NDArray[np.float32],
    limit: int,
    *,
    fresh_items: npt.NDArray[np.int64] | None,
    fresh_raw: npt.NDArray[np.float32] | None,
    categories: Sequence[Sequence[Hashable]],
    fresh: npt.NDArray[np.float32] | None,
    config: RerankConfig,
) -> Reranked:
    """``rerank`` from its pool: the best ``max(MIN_POOL, POOL_FACTOR * limit)`` allowed
    positions best first (``top_allowed``) and their scores, with ``fresh_raw`` the scores at
    ``fresh_items`` (``-inf`` where not allowed). ``fresh_items`` may leave out fresh items
    that cannot clear the pool's floor with the largest bonus (a user's memo keeps the few
    near the top only); None when nothing is fresh."""
    if pool.size == 0:
        return EMPTY
    pool_size = max(MIN_POOL, POOL_FACTOR * limit)
    lo, hi = float(pool_scores[-1]), float(pool_scores[0])
    span = hi - lo if hi > lo else 1.0

    bonus_unit = config.freshness_boost * span
    if bonus_unit > 0 and fresh is not None and fresh_items is not None and fresh_raw is not None:
        # Only fresh items whose boosted score clears the pool's floor can enter it (a masked
        # item's -inf never does).
        raw = fresh_raw
        lifted = raw + bonus_unit * fresh[fresh_items]
        # Every score above the floor is already in the pool; one equal to it may be.
        outside = (lifted > lo) & (raw <= lo)
        extra = fresh_items[outside]
        if extra.size:
            extra_raw = raw[outside]
            tied = extra_raw == lo
            if tied.any():
                # Only the pool's entries at its floor can equal a tied candidate.
                members = set(pool[pool_scores == lo].tolist())
                keep = [
                    not (t and p in members)
                    for t, p in zip(tied.tolist(), extra.tolist(), strict=True)
                ]
                kept = np.array(keep, dtype=np.bool_)
                extra, extra_raw = extra[kept], extra_raw[kept]
            merged = np.concatenate([pool, extra])
            boosted = np.concatenate([pool_scores, extra_raw]) + bonus_unit * fresh[merged]
        else:
            merged, boosted = pool, pool_scores + bonus_unit * fresh[pool]
        order = _best_first(boosted, pool_size)
        pool, pool_scores = merged[order], boosted[order].astype(np.float32, copy=False)
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
