"""The home feed's per-snapshot orders: items by trending, by age and by trending per category.

The trending, new_arrivals and diverse_picks shelves want the best few allowed items by a score
that is the same for every user. Sorting the catalogue once per snapshot (the refresher warms
it, see ``server.discovery``) lets each request walk those orders past the few items the user
may not see, instead of partitioning the whole catalogue on every call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recgrpc.model.ranking import ServingSnapshot

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class FeedOrders:
    """Catalogue positions best first; equal scores in position order."""

    trending: I64
    """Items with a trending score above 0, most trending first."""
    created: I64
    """Every item, newest first (by ``created_at`` as float32, as the shelf has always ranked)."""
    by_category: dict[str, I64]
    """Each category's members, most trending first."""


def _best_first(values: npt.NDArray[np.float32]) -> I64:
    return np.argsort(-values, kind="stable").astype(np.int64)


def build_orders(snap: ServingSnapshot) -> FeedOrders:
    catalog, trending = snap.catalog, snap.trending
    by_trending = _best_first(trending)
    return FeedOrders(
        trending=by_trending[trending[by_trending] > 0],
        created=_best_first(catalog.created_at.astype(np.float32)),
        by_category={
            c: members[_best_first(trending[members])] for c, members in catalog.by_category.items()
        },
    )


class _Latest:
    """The orders of the most recent snapshot asked about (one snapshot serves at a time)."""

    def __init__(self) -> None:
        self._held: tuple[ServingSnapshot, FeedOrders] | None = None
        self._lock = threading.Lock()

    def of(self, snap: ServingSnapshot) -> FeedOrders:
        held = self._held
        if held is not None and held[0] is snap:
            return held[1]
        with self._lock:  # one thread sorts; the others wait for its result
            held = self._held
            if held is not None and held[0] is snap:
                return held[1]
            orders = build_orders(snap)
            self._held = (snap, orders)
            return orders


feed_orders = _Latest().of
"""The snapshot's ``FeedOrders``, sorted on first use and kept until the next snapshot."""


def first_allowed(order: I64, allowed: Mask, k: int, blocked: int | None = None) -> I64:
    """The first ``k`` positions of ``order`` that ``allowed`` admits. Only the first
    ``k + blocked`` entries can hold them (``blocked``: how many items ``allowed`` refuses,
    counted when not given), so the walk is short however large the catalogue is."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if blocked is None:
        blocked = allowed.size - int(np.count_nonzero(allowed))
    head = order[: k + blocked]
    return head[allowed[head]][:k]
