"""A user's remembered pool per source (model.user_memo), and a query's exact pick from it.

A pool keeps what ranking needs of a user's masked scores (seen, dismissed and unscored items
at ``-inf``): the positions above a threshold (with their scores, so every position above the
pool's lowest score is in it), and the fresh items scoring near them. A context's first query
without exclusions or categories is ranked exactly as ``rerank`` ranks it, and its candidates
are the pool (nothing more is computed for a context just read); a query the pool cannot decide
is ranked from the whole catalogue again, and keeps a wider pool (about ``2 x MEMO_TOP``).
``pick`` tells the re-ranking pool ``rerank.top_allowed`` would choose for a query (its
exclusions and category filter masking more), in one of two exact ways:

- the best remaining positions have distinct scores, the last above anything left out: the top
  ``pool size`` is then unique, whatever argpartition does;
- otherwise (equal scores), ``top_allowed`` itself is replayed: the threshold from the masked
  sample (whose values above the pool's floor are all in the pool), the candidates above it in
  position order, the same argpartition over the same values.

When neither can be certain (too few remembered positions survive a filter, a small catalogue
that ``top_allowed`` ranks whole), ``pick`` answers None and the caller scores the catalogue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.rerank import (
    EMPTY,
    MIN_POOL,
    POOL_FACTOR,
    SAMPLE_STEP,
    RerankConfig,
    Reranked,
    best_of,
    candidates_of,
    rerank_pool,
)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Flags = npt.NDArray[np.bool_]
MEMO_TOP = 200
"""A wider pool holds at least this many positions (about twice as many): a query of up to 40
items (a re-ranking pool of 160) with dozens of exclusions is ranked from it."""
_MARGIN = 1e-3
_local = threading.local()


@dataclass(slots=True)  # (not frozen: built on a request's path; ``order`` set once, lazily)
class SourcePool:
    positions: I64
    """Positions, ascending, including every one scoring above ``floor``."""
    scores: F32
    floor: float
    """The lowest of ``scores``; positions left out score at most this."""
    complete: bool
    """True when ``positions`` are every position with a finite score."""
    sample_size: int
    """``top_allowed``'s sample size over the whole catalogue (``n / SAMPLE_STEP``, rounded up)."""
    fresh_items: I64 | None
    """Fresh positions (ascending) scoring at least ``fresh_floor``; None: no boost."""
    fresh_raw: F32 | None
    fresh_floor: float
    """Every fresh item left out of ``fresh_items`` scores below this."""
    order: npt.NDArray[np.intp] | None = None
    """``positions`` best first (equal scores in any order), sorted by the first pick."""

    def ranked(self) -> tuple[I64, F32]:
        order = self.order
        if order is None:
            order = self.order = np.argsort(-self.scores)
        return self.positions[order], self.scores[order]


@dataclass(slots=True)
class PoolPick:
    """A query's re-ranking pool taken from a ``SourcePool`` (``rerank.rerank_pool``'s input)."""

    pool: I64
    pool_scores: F32
    fresh_items: I64 | None
    fresh_raw: F32 | None


def build_pool(
    scores: F32,
    k: int,
    fresh: F32 | None,
    fresh_items: I64 | None,
    boost: float,
    *,
    found: tuple[npt.NDArray[np.intp], bool] | None = None,
    fresh_raw: F32 | None = None,
    values: F32 | None = None,
) -> SourcePool:
    """The pool of a user's masked ``scores`` (one value per catalogue item): the candidates
    ``top_allowed(scores, k)`` partitions, or about 2k of them from a sampled threshold.
    ``found`` (``rerank.candidates_of(scores, k)``), ``fresh_raw`` (``scores[fresh_items]``) and
    ``values`` (the scores of ``found``) are reused when the caller has them already."""
    candidates, complete = _sampled(scores, k) if found is None else found
    values = scores[candidates] if values is None or found is None else values
    floor = float(values.min()) if values.size and not complete else -np.inf
    pool = SourcePool(
        candidates.astype(np.int64, copy=False), values, floor, complete,
        (scores.size + SAMPLE_STEP - 1) // SAMPLE_STEP, None, None, -np.inf,
    )  # fmt: skip
    if fresh is not None and fresh_items is not None and fresh_items.size and boost > 0:
        raw = scores[fresh_items] if fresh_raw is None else fresh_raw
        fresh_floor = -np.inf
        if not complete and values.size:
            # A pool taken from these positions has its lowest score at ``floor`` or higher
            # and its span at most the best score's distance to it: no fresh item scoring
            # below ``fresh_floor`` can be lifted into it.
            hi = float(values.max())
            fresh_floor = floor - boost * (hi - floor)
            fresh_floor -= _MARGIN * (abs(fresh_floor) + (hi - floor)) + 1e-30
        near = raw >= fresh_floor
        pool.fresh_items, pool.fresh_raw, pool.fresh_floor = (
            fresh_items[near],
            raw[near],
            fresh_floor,
        )
    return pool


def _sampled(scores: F32, k: int) -> tuple[npt.NDArray[np.intp], bool]:
    """Ascending positions including every one above their lowest score: about 2k of them,
    from a threshold the sample's 2k/SAMPLE_STEP-th best (the k best when that is too few;
    every finite one, and True, when there are at most 4k)."""
    sample = scores[::SAMPLE_STEP]
    cut = max(1, 2 * k // SAMPLE_STEP)
    if sample.size > cut:
        threshold = np.partition(sample, sample.size - cut)[sample.size - cut]
        if threshold > -np.inf:
            candidates = (scores >= threshold).nonzero()[0]
            if candidates.size >= k:
                return candidates, False
    candidates = (scores > -np.inf).nonzero()[0]
    if candidates.size <= 4 * k:
        return candidates, True
    part = np.argpartition(scores[candidates], candidates.size - k)[candidates.size - k :]
    part.sort()
    return candidates[part], False


def rank_keeping(
    pools: dict[Algorithm, SourcePool],
    source: Algorithm,
    scores: F32,
    query: domain.RecommendationQuery,
    *,
    catalog: CatalogIndex,
    fresh: F32 | None,
    fresh_items: I64 | None,
    config: RerankConfig,
) -> Reranked | None:
    """``rerank`` of the user's masked ``scores`` for ``query``, keeping a pool of them in
    ``pools``: a first query without exclusions or categories is ranked exactly as ``rerank``
    ranks it (the same candidates, which become the pool); otherwise a wider pool is kept and
    the query picked from it. None when it cannot (mask the query's items and ``rerank``)."""
    size = max(MIN_POOL, POOL_FACTOR * query.limit)
    boost = config.freshness_boost
    plain = not (query.exclude_item_ids or query.categories)
    if plain and query.limit > 0 and source not in pools:
        boosting = fresh is not None and fresh_items is not None and fresh_items.size > 0
        found = candidates_of(scores, size)
        raw = scores[fresh_items] if boosting and fresh_items is not None else None
        values = scores[found[0]]
        top, top_scores = best_of(found[0], values, size)
        if top_scores.size > 1 and (top_scores[:-1] == top_scores[1:]).any():
            # Equal scores: the next queries will replay top_allowed, which needs more of
            # the sample above the pool's floor than these candidates hold.
            wide = max(MEMO_TOP, size)
            pools[source] = build_pool(scores, wide, fresh, fresh_items, boost, fresh_raw=raw)
        else:
            pools[source] = build_pool(
                scores, size, fresh, fresh_items, boost, found=found, fresh_raw=raw, values=values
            )
        return rerank_pool(
            top, top_scores, query.limit, fresh_items=fresh_items if boosting else None,
            fresh_raw=raw, categories=catalog.categories, fresh=fresh, config=config,
        )  # fmt: skip
    pools[source] = build_pool(scores, max(MEMO_TOP, size), fresh, fresh_items, boost)
    return rerank_from(pools[source], catalog, query, fresh, config)


def rerank_from(
    pool: SourcePool,
    catalog: CatalogIndex,
    query: domain.RecommendationQuery,
    fresh: F32 | None,
    config: RerankConfig,
) -> Reranked | None:
    """``rerank`` for ``query`` from the pool; None when the pool cannot decide it."""
    if query.limit <= 0:
        return EMPTY
    chosen = pick_for(pool, catalog, query, config.freshness_boost)
    if chosen is None:
        return None
    return rerank_pool(
        chosen.pool, chosen.pool_scores, query.limit, fresh_items=chosen.fresh_items,
        fresh_raw=chosen.fresh_raw, categories=catalog.categories, fresh=fresh, config=config,
    )  # fmt: skip


def pick_for(
    pool: SourcePool, catalog: CatalogIndex, query: domain.RecommendationQuery, boost: float
) -> PoolPick | None:
    """``pick`` for ``query``'s limit, exclusions and category filter."""
    n = len(catalog)
    if not (query.exclude_item_ids or query.categories):
        return pick(pool, n, query.limit, None, boost)
    # This thread's flags (one spare slot for unknown ids), all False again when done.
    blocked: Flags | None = getattr(_local, "blocked", None)
    if blocked is None or blocked.size != n + 1:
        blocked = _local.blocked = np.zeros(n + 1, dtype=np.bool_)
    excluded = catalog.positions_or(query.exclude_item_ids, n)
    try:
        if query.categories:
            np.logical_not(catalog.category_mask(query.categories), out=blocked[:n])
        blocked[excluded] = True
        return pick(pool, n, query.limit, blocked, boost)
    finally:
        blocked.fill(False)


def pick(
    pool: SourcePool, n: int, limit: int, blocked: Flags | None, boost: float
) -> PoolPick | None:
    """The re-ranking pool ``top_allowed`` would choose over ``n`` items for this query, or
    None when the memo's pool cannot tell it for certain. ``blocked`` is True for each
    position the query excludes or filters out (None: none)."""
    size = max(MIN_POOL, POOL_FACTOR * limit)
    chosen = _distinct(pool, size, blocked)
    if chosen is None:
        chosen = _replayed(pool, n, size, blocked)
    if chosen is None:
        return None
    top, values = chosen
    if pool.fresh_items is None or pool.fresh_raw is None or not top.size:
        return PoolPick(top, values, None, None)
    lo, hi = float(values[-1]), float(values[0])
    bonus = boost * (hi - lo if hi > lo else 1.0)
    if lo - bonus < pool.fresh_floor + 1e-6 * (abs(lo) + bonus + abs(pool.fresh_floor)):
        return None
    items, raw = pool.fresh_items, pool.fresh_raw
    if blocked is not None:
        masked = blocked[items]
        if masked.any():
            raw = np.where(masked, np.float32(-np.inf), raw)
    return PoolPick(top, values, items, raw)


def _distinct(pool: SourcePool, size: int, blocked: Flags | None) -> tuple[I64, F32] | None:
    """The best ``size`` remaining positions, when their scores decide them uniquely."""
    top, values = pool.ranked()
    if blocked is not None:
        keep = ~blocked[top]
        top, values = top[keep], values[keep]
    if top.size > size:
        beyond = float(values[size])
        top, values = top[:size], values[:size]
    elif pool.complete:
        beyond = -np.inf
    elif top.size < size:
        return None
    else:
        beyond = pool.floor  # what the pool left out scores at most this
    if not top.size:
        return (top, values) if pool.complete else None
    # Distinct scores, the last above anything left out: the pool and its order are unique.
    if not float(values[-1]) > beyond or not (values[:-1] > values[1:]).all():
        return None
    return top, values


def _replayed(pool: SourcePool, n: int, size: int, blocked: Flags | None) -> tuple[I64, F32] | None:
    """``top_allowed(scores, size)`` over the query's masked scores, step by step, from the
    remembered positions: None where it would read scores the memo does not have."""
    if not n > 16 * SAMPLE_STEP * size:
        return None  # top_candidates takes every finite score: only scoring has them all
    # The sample's values above the pool's floor are all in the pool (sampled positions are
    # multiples of SAMPLE_STEP): when the m-th best is one of them, it is the threshold.
    above, values = pool.positions, pool.scores
    if blocked is not None:
        values = np.where(blocked[above], np.float32(-np.inf), values)
    sample = values[above % SAMPLE_STEP == 0]
    m = min(pool.sample_size, 3 * size // SAMPLE_STEP + 1)
    if sample.size < m:
        return None  # the m-th best sampled score is at most the floor
    threshold = np.partition(sample, sample.size - m)[sample.size - m]
    if not threshold > -np.inf or not float(threshold) > pool.floor:
        return None  # scores at the threshold may have been left out (or no threshold at all)
    found = values >= threshold  # in position order, as top_candidates finds them
    candidates, scores = above[found], values[found]
    if candidates.size < size:
        return None  # top_candidates would take every finite score
    if candidates.size > size:
        part = np.argpartition(scores, scores.size - size)[scores.size - size :]
        candidates, scores = candidates[part], scores[part]
    order = np.argsort(-scores, kind="stable")
    return candidates[order], scores[order]
