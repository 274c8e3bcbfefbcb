"""A user's remembered pool per source (model.user_memo), and a query's exact pick from it.

``build_pool`` keeps what ranking needs of a user's masked scores (seen, dismissed and unscored
items at ``-inf``): every position scoring at least its ``MEMO_TOP``-th best value, the best
``SAMPLE_KEEP`` values of ``top_allowed``'s strided sample, and the fresh items scoring near the
top. ``pick`` then tells the re-ranking pool ``rerank.top_allowed`` would choose for a query
(its exclusions and category filter masking more), in one of two exact ways:

- the best remaining positions have distinct scores, the last above anything left out: the top
  ``pool size`` is then unique, whatever argpartition does;
- otherwise (equal scores), ``top_allowed`` itself is replayed: the threshold from the masked
  sample, the candidates above it in position order, the same argpartition over the same values.

When neither can be certain (too few remembered positions survive a filter, a small catalogue
that ``top_allowed`` ranks whole), ``pick`` answers None and the caller scores the catalogue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.rerank import MIN_POOL, POOL_FACTOR, SAMPLE_STEP

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Flags = npt.NDArray[np.bool_]
MEMO_TOP = 256
"""Positions kept per source: a query of up to 40 items (a re-ranking pool of 160) with dozens
of exclusions is ranked from them."""
SAMPLE_KEEP = 128
"""Best sample values kept: ``top_allowed``'s threshold for a pool of up to 300 with dozens of
sampled positions excluded."""
_MARGIN = 1e-3
_local = threading.local()


@dataclass(slots=True)  # (not frozen: built on a request's path, and never changed)
class SourcePool:
    top: I64
    """The ``MEMO_TOP`` best positions, best first (equal scores in any order): every one
    scoring above ``floor`` is among them (``floor`` is their lowest score, which positions
    left out may equal)."""
    top_scores: F32
    floor: float
    complete: bool
    """True when ``top`` holds every position with a finite score."""
    sample_at: I64
    """Positions of the best ``SAMPLE_KEEP`` values of ``scores[::SAMPLE_STEP]``, best first
    (none when ``top`` has distinct scores: a pick then never needs to replay)."""
    sample_scores: F32
    sample_size: int
    fresh_items: I64 | None
    """Fresh positions (ascending) scoring at least ``fresh_floor``; None: no boost."""
    fresh_raw: F32 | None
    fresh_floor: float
    """Every fresh item left out of ``fresh_items`` scores below this."""

    @property
    def nbytes(self) -> int:
        arrays = (self.top, self.top_scores, self.sample_at, self.sample_scores)
        extra = 0 if self.fresh_items is None else self.fresh_items.nbytes * 2
        return sum(a.nbytes for a in arrays) + extra


@dataclass(slots=True)
class PoolPick:
    """A query's re-ranking pool taken from a ``SourcePool`` (``rerank.rerank_pool``'s input)."""

    pool: I64
    pool_scores: F32
    fresh_items: I64 | None
    fresh_raw: F32 | None


def build_pool(scores: F32, fresh: F32 | None, fresh_items: I64 | None, boost: float) -> SourcePool:
    """The pool of a user's masked ``scores`` (one value per catalogue item)."""
    sample = scores[::SAMPLE_STEP]
    # About 3 x MEMO_TOP scores clear the sample's 3 x MEMO_TOP / SAMPLE_STEP-th best; when
    # fewer than MEMO_TOP do (or nothing is sampled that far), every finite score is a candidate.
    cut = 3 * MEMO_TOP // SAMPLE_STEP
    candidates = None
    if sample.size > cut:
        threshold = np.partition(sample, sample.size - cut)[sample.size - cut]
        if threshold > -np.inf:
            candidates = (scores >= threshold).nonzero()[0]
            if candidates.size < MEMO_TOP:
                candidates = None
    complete = candidates is None
    if candidates is None:
        candidates = (scores > -np.inf).nonzero()[0]
        complete = candidates.size <= MEMO_TOP
    values = scores[candidates]
    floor = -np.inf
    if candidates.size > MEMO_TOP:
        part = np.argpartition(values, values.size - MEMO_TOP)[values.size - MEMO_TOP :]
        candidates, values = candidates[part], values[part]
        floor = float(values.min())  # what is left out scores at most this
    order = np.argsort(-values)  # (equal scores in any order: picks never rely on it)
    top, ranked = candidates[order].astype(np.int64, copy=False), values[order]
    best = np.zeros(0, dtype=np.intp)
    if (ranked[:-1] == ranked[1:]).any():
        # Equal scores: a pick may have to replay top_allowed, from the sample's best values.
        best = np.arange(sample.size)
        if sample.size > SAMPLE_KEEP:  # (which of equal values at the cut is kept is no matter)
            best = np.argpartition(sample, sample.size - SAMPLE_KEEP)[sample.size - SAMPLE_KEEP :]
        best = best[np.argsort(-sample[best])]
    fresh_part: tuple[I64 | None, F32 | None, float] = (None, None, -np.inf)
    if fresh is not None and fresh_items is not None and fresh_items.size and boost > 0:
        raw = scores[fresh_items]
        fresh_floor = -np.inf
        if not complete and values.size:
            # A pool taken from ``top`` has its lowest score at ``floor`` or higher and its
            # span at most the best score's distance to it: no fresh item scoring below
            # ``fresh_floor`` can be lifted into it.
            hi = float(ranked[0])
            fresh_floor = floor - boost * (hi - floor)
            fresh_floor -= _MARGIN * (abs(fresh_floor) + (hi - floor)) + 1e-30
        near = raw >= fresh_floor
        fresh_part = (fresh_items[near], raw[near], fresh_floor)
    return SourcePool(
        top, ranked, floor, complete,
        (best * SAMPLE_STEP).astype(np.int64), sample[best], int(sample.size), *fresh_part,
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
    top, values = pool.top, pool.top_scores
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
        beyond = pool.floor  # what ``top`` left out scores at most this
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
    sample = pool.sample_scores
    if blocked is not None:
        sample = sample[~blocked[pool.sample_at]]
    m = min(pool.sample_size, 3 * size // SAMPLE_STEP + 1)
    if sample.size < m:
        return None  # the m-th best sampled score is one the memo did not keep
    threshold = sample[m - 1]
    if not threshold > -np.inf or not float(threshold) > pool.floor:
        return None  # scores at the threshold may have been left out (or no threshold at all)
    ascending = np.argsort(pool.top)
    above, values = pool.top[ascending], pool.top_scores[ascending]
    if blocked is not None:
        values = np.where(blocked[above], np.float32(-np.inf), values)
    found = values >= threshold  # in position order, as top_candidates finds them
    candidates, scores = above[found], values[found]
    if candidates.size < size:
        return None  # top_candidates would take every finite score
    if candidates.size > size:
        part = np.argpartition(scores, scores.size - size)[scores.size - size :]
        candidates, scores = candidates[part], scores[part]
    order = np.argsort(-scores, kind="stable")
    return candidates[order], scores[order]
