"""HYBRID and CONTENT ranking of a large catalogue from the approximate indexes (model.ann).

The index's candidates come with their scores (the index computes the inner products) and are
filtered exactly (seen, dismissed, excluded, unscored items), widening the search when too few
survive; a category filter ranks exactly over the categories' members instead. The freshness
boost and diversity then apply among the candidates: a fresh item the index did not return is
not lifted in.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.ann import ItemIndex
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.rerank import (
    FRESH_SIGNIFICANT,
    MIN_POOL,
    POOL_FACTOR,
    RerankConfig,
    Reranked,
    rerank,
)
from recgrpc.model.scoring import scores as score_items

if TYPE_CHECKING:  # ranking imports this module
    from recgrpc.model.ranking import ServingSnapshot

OVERFETCH = 4
"""Index candidates asked for per pool slot (re-scoring them exactly is cheap)."""
MAX_FETCH = 20_000
"""Widest index search before ranking scores the whole catalogue instead."""


def approximate(
    snap: ServingSnapshot,
    source: Algorithm,
    context: domain.UserContext,
    query: domain.RecommendationQuery,
    vector: npt.NDArray[np.float32],
) -> Reranked | None:
    """The list from the snapshot's approximate index, when it has one for ``source``; None
    when the whole catalogue must be scored. The index ranks LightFM's scores alone: with an
    EASE part, HYBRID lists come from the exact, blended scores."""
    model = snap.model
    if model is None:
        return None
    if source == Algorithm.HYBRID and model.ann is not None and model.ease is None:
        index, scorable = model.ann, model.scorable
    elif source == Algorithm.CONTENT and model.content_ann is not None:
        index, scorable = model.content_ann, model.has_content
    else:
        return None
    return approximate_ranking(
        snap.catalog, index, scorable, context, query, vector=vector,
        freshness=snap.freshness, config=snap.config.rerank,
    )  # fmt: skip


def approximate_ranking(
    catalog: CatalogIndex,
    index: ItemIndex,
    scorable: npt.NDArray[np.bool_],
    context: domain.UserContext,
    query: domain.RecommendationQuery,
    *,
    vector: npt.NDArray[np.float32],
    freshness: npt.NDArray[np.float32] | None,
    config: RerankConfig,
) -> Reranked | None:
    """The re-ranked list (catalogue positions) of ``index``'s candidates that ``scorable``
    admits; None when too few candidates survive the filters even after widening (the caller
    then scores the whole catalogue)."""
    pool_size = max(MIN_POOL, POOL_FACTOR * query.limit)
    blocked = catalog.indices(
        itertools.chain(context.seen_item_ids, context.dismissed_item_ids, query.exclude_item_ids)
    )
    if query.categories:
        found = [catalog.by_category[c] for c in query.categories if c in catalog.by_category]
        if not found:
            return None
        candidates = np.unique(np.concatenate(found))
        scores = score_items(index.items[candidates], vector)
    else:
        fetch = OVERFETCH * pool_size + blocked.size
        while True:
            candidates, scores = index.search(vector, fetch)
            usable = scorable[candidates] & ~among(candidates, blocked)
            if np.count_nonzero(usable) >= pool_size or fetch >= index.size:
                break
            if fetch >= MAX_FETCH:
                return None
            fetch *= 4
        # Catalogue order, as exact ranking sees them: equal scores then break the same way.
        order = np.argsort(candidates)
        candidates, scores = candidates[order], scores[order]
        usable = usable[order]
        scores[~usable] = -np.inf
        return rerank_among(
            catalog, candidates, scores, query.limit, freshness=freshness, config=config
        )
    scores[~scorable[candidates] | among(candidates, blocked)] = -np.inf
    return rerank_among(
        catalog, candidates, scores, query.limit, freshness=freshness, config=config
    )


def rerank_among(
    catalog: CatalogIndex,
    candidates: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    limit: int,
    *,
    freshness: npt.NDArray[np.float32] | None,
    config: RerankConfig,
) -> Reranked:
    """``rerank`` over ``candidates`` (ascending catalogue positions) with their ``scores``
    (``-inf`` where not to be shown): catalogue positions, as ranking the whole catalogue
    gives when every item that could enter the list is a candidate."""
    fresh = None if freshness is None else freshness[candidates]
    result = rerank(
        scores,
        limit,
        categories=_Positions(catalog.categories, candidates),
        fresh=fresh,
        fresh_items=None if fresh is None else np.flatnonzero(fresh >= FRESH_SIGNIFICANT),
        config=config,
    )
    return Reranked(candidates[result.indices], result.scores, result.fresh)


def among(values: npt.NDArray[np.int64], members: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """True where ``values`` holds one of ``members``. ``np.isin`` would build a table over
    their range, about the catalogue's size (page faults for a fresh allocation every call)."""
    if members.size == 0:
        return np.zeros(values.size, dtype=np.bool_)
    if members.size * values.size <= 16_384:
        found: npt.NDArray[np.bool_] = (values[:, None] == members[None, :]).any(axis=1)
        return found
    # Sorting is cheaper than the table unless ``values`` is about as long as the catalogue.
    return np.isin(values, members, kind="sort" if values.size < 16_384 else None)


class _Positions(Sequence[tuple[str, ...]]):
    """``values`` seen through ``positions`` (candidate i is catalogue item positions[i])."""

    def __init__(self, values: Sequence[tuple[str, ...]], positions: npt.NDArray[np.int64]) -> None:
        self._values, self._positions = values, positions

    def __len__(self) -> int:
        return int(self._positions.size)

    @overload
    def __getitem__(self, i: int) -> tuple[str, ...]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[str, ...]]: ...
    def __getitem__(self, i: int | slice) -> tuple[str, ...] | Sequence[tuple[str, ...]]:
        if isinstance(i, slice):
            return [self._values[p] for p in self._positions[i].tolist()]
        return self._values[int(self._positions[i])]
