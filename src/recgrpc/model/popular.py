"""POPULAR (trending) for a large catalogue from the trending order, sorted once per snapshot.

Ranking the whole catalogue by trending copies and masks a score per item, and the freshness
boost reads every fresh item's score, on every call. With the order precomputed, a call walks
the top of it past the blocked items (seen, dismissed, excluded) to fill the re-ranking pool,
adds the fresh items whose trending score is within the largest boost of the pool's floor
(the only ones the boost could lift in: the fresh items are kept in trending order too), and
re-ranks those. That is the list the whole-catalogue ranking gives (items of equal score may
come in another order). A category filter, or ties too many to walk, rank the whole catalogue.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.model.approximate import among, rerank_among
from recgrpc.model.rerank import FRESH_SIGNIFICANT, MIN_POOL, POOL_FACTOR, Reranked

LARGE_CATALOGUE = 100_000
"""Catalogues this large keep the trending order (smaller ones rank all of it as fast)."""
if TYPE_CHECKING:  # ranking imports this module
    from recgrpc.model.ranking import ServingSnapshot

MAX_WALK = 20_000
"""Most candidates a call gathers (the pool, items tied with its floor, fresh items near it)
before it ranks the whole catalogue instead."""


@dataclass(frozen=True)
class TrendingOrder:
    """Catalogue positions by trending score, best first (ties in position order), and the
    fresh items (freshness at least ``FRESH_SIGNIFICANT``) in the same order."""

    order: npt.NDArray[np.int64]
    descending: npt.NDArray[np.float32]
    """Minus the trending score along ``order``: ascending, for ``searchsorted``."""
    fresh_order: npt.NDArray[np.int64]
    fresh_descending: npt.NDArray[np.float32]

    @classmethod
    def build(
        cls, trending: npt.NDArray[np.float32], freshness: npt.NDArray[np.float32]
    ) -> TrendingOrder:
        order = np.argsort(-trending, kind="stable").astype(np.int64)
        fresh_order = order[freshness[order] >= FRESH_SIGNIFICANT]
        return cls(
            order=order,
            descending=-trending[order],
            fresh_order=fresh_order,
            fresh_descending=-trending[fresh_order],
        )


Held = tuple[npt.NDArray[np.float32], TrendingOrder] | None
"""A snapshot's trending scores and their order (None: the catalogue is small)."""


def trending_order(snap: ServingSnapshot, previous: Held) -> Held:
    """The order of a new snapshot's trending scores (None for a small catalogue); the
    previous one when the scores are the same array (a snapshot rebuilt for another reason)."""
    trending = snap.trending
    if trending.size < LARGE_CATALOGUE or snap.freshness is None:
        return None
    if previous is not None and previous[0] is trending:
        return previous
    return trending, TrendingOrder.build(trending, snap.freshness)


def top_trending(
    held: Held,
    snap: ServingSnapshot,
    context: domain.UserContext,
    query: domain.RecommendationQuery,
) -> Reranked | None:
    """The re-ranked POPULAR list (catalogue positions) from ``held``, the order of
    ``snap``'s trending scores; None when the whole catalogue must be ranked instead (no order
    for these scores, a category filter, or too many candidates)."""
    if held is None or held[0] is not snap.trending or query.categories or query.limit <= 0:
        return None
    order, trending, catalog = held[1], snap.trending, snap.catalog
    freshness, config = snap.freshness, snap.config.rerank
    pool_size = max(MIN_POOL, POOL_FACTOR * query.limit)
    blocked = catalog.indices(
        itertools.chain(context.seen_item_ids, context.dismissed_item_ids, query.exclude_item_ids)
    )
    head = order.order[: pool_size + blocked.size]
    shown = head[~among(head, blocked)]
    if shown.size < pool_size:  # the catalogue has no more
        return None
    hi, lo = float(trending[shown[0]]), float(trending[shown[pool_size - 1]])
    # Items tied with the floor may be in the pool instead of one walked past.
    end = int(np.searchsorted(order.descending, -lo, side="right"))
    if end > MAX_WALK:
        return None
    parts = [order.order[:end]]
    if freshness is not None and config.freshness_boost > 0:
        bonus = config.freshness_boost * (hi - lo if hi > lo else 1.0)
        reach = int(np.searchsorted(order.fresh_descending, -(lo - bonus), side="right"))
        if end + reach > MAX_WALK:
            return None
        parts.append(order.fresh_order[:reach])
    candidates = np.unique(np.concatenate(parts))
    scores = trending[candidates].astype(np.float32)
    scores[among(candidates, blocked)] = -np.inf
    return rerank_among(
        catalog, candidates, scores, query.limit, freshness=freshness, config=config
    )
