"""The ranking engine the server calls: picks a source per request and ranks the catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.catalog import CatalogIndex

TRENDING_REASON = "trending"


@dataclass(frozen=True)
class ServingSnapshot:
    """Everything ranking reads, swapped as one object so requests never see a half-update."""

    catalog: CatalogIndex
    trending: npt.NDArray[np.float32]
    built_at: datetime

    @classmethod
    def empty(cls, now: datetime) -> ServingSnapshot:
        catalog = CatalogIndex.build([])
        return cls(catalog=catalog, trending=np.zeros(0, dtype=np.float32), built_at=now)


def top_k(
    scores: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_], k: int
) -> npt.NDArray[np.int64]:
    """Indices of the ``k`` best allowed scores, best first (argpartition, then a small sort)."""
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    if candidates.size > k:
        part = np.argpartition(-scores[candidates], k - 1)[:k]
        candidates = candidates[part]
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order].astype(np.int64)


def allowed_mask(
    catalog: CatalogIndex, context: domain.UserContext, query: domain.RecommendationQuery
) -> npt.NDArray[np.bool_]:
    """Items that may be shown: in the category filter, and not seen, dismissed or excluded."""
    if query.categories:
        allowed = catalog.category_mask(query.categories)
    else:
        allowed = np.ones(len(catalog), dtype=np.bool_)
    for blocked in (context.seen_item_ids, context.dismissed_item_ids, query.exclude_item_ids):
        if blocked:
            allowed[catalog.indices(blocked)] = False
    return allowed


class RankingEngine:
    """Serves lists from the current snapshot. Thread-safe: readers take one reference."""

    def __init__(self, snapshot: ServingSnapshot) -> None:
        self._snapshot = snapshot

    @property
    def snapshot(self) -> ServingSnapshot:
        return self._snapshot

    def swap(self, snapshot: ServingSnapshot) -> None:
        # A single reference assignment is atomic: in-flight requests keep the old snapshot.
        self._snapshot = snapshot

    @property
    def ready(self) -> bool:
        return True

    def recommend(
        self, context: domain.UserContext, query: domain.RecommendationQuery
    ) -> domain.RecommendationList:
        snap = self._snapshot
        allowed = allowed_mask(snap.catalog, context, query)
        fallback = "" if query.algorithm == Algorithm.POPULAR else "no trained model is active"
        return self._trending(snap, allowed, query.limit, fallback)

    @staticmethod
    def _trending(
        snap: ServingSnapshot, allowed: npt.NDArray[np.bool_], limit: int, fallback: str
    ) -> domain.RecommendationList:
        picked = top_k(snap.trending, allowed, limit)
        items = [
            domain.ScoredItem(snap.catalog.item_ids[i], float(snap.trending[i]), TRENDING_REASON)
            for i in picked
        ]
        return domain.RecommendationList(
            items=items, algorithm=Algorithm.POPULAR, fallback_reason=fallback
        )
