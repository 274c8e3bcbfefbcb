"""Re-ranking after scoring: a freshness boost and an MMR-style category-diversity penalty.

Both work on a small candidate pool (the best few dozen allowed items plus the fresh ones), on
scores rescaled to the pool's span, so the settings mean the same for every source:
``freshness_boost=0.1`` adds up to a tenth of the pool's score range to a brand-new item, and
``diversity=0.2`` costs a candidate a fifth of that range for each already-chosen item of its
category (averaged over the item's categories).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    diversity: float = 0.2
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


def _top(
    scores: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_], k: int
) -> npt.NDArray[np.int64]:
    """The ``k`` best allowed positions, best first (``k`` must not exceed the allowed count)."""
    masked = np.where(allowed, scores, -np.inf)
    if k < masked.size:
        top = np.argpartition(masked, masked.size - k)[masked.size - k :]
    else:
        top = np.arange(masked.size)
    top = top[allowed[top]]
    return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)


def rerank(
    scores: npt.NDArray[np.float32],
    allowed: npt.NDArray[np.bool_],
    limit: int,
    *,
    categories: Sequence[Sequence[str]],
    fresh: npt.NDArray[np.float32] | None,
    fresh_items: npt.NDArray[np.int64] | None,
    config: RerankConfig,
) -> Reranked:
    """The ``limit`` best allowed items after freshness boost and diversity penalty.

    ``categories`` holds each item's distinct categories (as ``CatalogIndex`` keeps them).
    ``fresh`` is per-item freshness (0..1) and ``fresh_items`` the positions where it is
    significant, both precomputed with the snapshot so a request touches only the pool.
    """
    n_allowed = int(np.count_nonzero(allowed))
    empty = Reranked(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.bool_))
    if n_allowed == 0 or limit <= 0:
        return empty
    pool_size = max(MIN_POOL, POOL_FACTOR * limit)
    pool = _top(scores, allowed, min(pool_size, n_allowed))
    raw_top = set(pool[:limit].tolist())
    lo, hi = float(scores[pool[-1]]), float(scores[pool[0]])
    span = hi - lo if hi > lo else 1.0

    pool_scores = scores[pool].astype(np.float32)
    bonus_unit = config.freshness_boost * span
    if bonus_unit > 0 and fresh is not None and fresh_items is not None and fresh_items.size:
        # Only fresh items whose boosted score clears the pool's floor can enter it.
        lifted = scores[fresh_items] + bonus_unit * fresh[fresh_items]
        extra = fresh_items[(lifted > lo) & allowed[fresh_items]]
        in_pool = np.zeros(scores.size, dtype=np.bool_)
        in_pool[pool] = True
        extra = extra[~in_pool[extra]]
        merged = np.concatenate([pool, extra])
        boosted = scores[merged] + bonus_unit * fresh[merged]
        order = np.argsort(-boosted, kind="stable")[:pool_size]
        pool, pool_scores = merged[order], boosted[order].astype(np.float32)
        is_fresh = np.array(
            [p not in raw_top and fresh[p] >= FRESH_SIGNIFICANT for p in pool.tolist()],
            dtype=np.bool_,
        )
    else:
        is_fresh = np.zeros(pool.size, dtype=np.bool_)

    if config.diversity <= 0 or pool.size <= 1:
        picked = np.arange(min(limit, pool.size))
    else:
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
    categories: Sequence[Sequence[str]],
    diversity: float,
) -> npt.NDArray[np.int64]:
    """Greedy MMR: repeatedly take the best score minus the repeated-category penalty.

    An item's penalty is ``diversity`` times the number of already-chosen items in each of its
    categories, averaged over its categories. The pool is a few dozen items, so plain Python
    with incremental penalties beats building matrices: each pick lowers only the items that
    share one of its categories.
    """
    adjusted = ((pool_scores.astype(np.float64) - lo) / span).tolist()
    item_categories = [categories[p] for p in pool.tolist()]
    members: dict[str, list[tuple[int, float]]] = {}
    for j, cats in enumerate(item_categories):
        for c in cats:
            members.setdefault(c, []).append((j, diversity / len(cats)))
    chosen: list[int] = []
    for _ in range(min(limit, len(adjusted))):
        best = adjusted.index(max(adjusted))  # the first of equal bests, like argmax
        chosen.append(best)
        adjusted[best] = -math.inf
        for c in item_categories[best]:
            for j, penalty in members[c]:
                adjusted[j] -= penalty
    return np.array(chosen, dtype=np.int64)
