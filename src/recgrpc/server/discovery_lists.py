"""The ranking part of GetSimilarItems and GetFrequentlyTogether over one serving snapshot.

Pure functions of the snapshot, the neighbour index and the user's context (no database):
``server.discovery`` reads the item and the context, calls these, and records what is served.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.model.ranking import ServingSnapshot
from recgrpc.model.scoring import scores as score_items
from recgrpc.model.similar import (
    ItemText,
    PersonalScores,
    SimilarityIndex,
    SimilarityMode,
    rank_similar,
    top_positions,
)
from recgrpc.server.discovery_types import SimilarQuery, TogetherQuery, Unserved
from recgrpc.server.neighbour_keeper import TRENDING_FALLBACK

NO_RULES = "no frequently-together rules for these items: similar items instead"


def similar_list(
    snap: ServingSnapshot,
    index: SimilarityIndex | None,
    query: SimilarQuery,
    item: ItemText,
    context: domain.UserContext | None,
    *,
    why_none: str = "",
) -> Unserved:
    """GetSimilarItems' list; trending (``why_none`` saying why) without a neighbour index."""
    allowed = allowed_mask(snap, context, query.exclude_item_ids, query.categories)
    position = snap.catalog.position.get(item.item_id)
    if position is not None:
        allowed[position] = False  # never the item itself
    if index is None:
        return trending_list(snap, allowed, query.limit, why_none, "SIMILAR_TRENDING")
    personal = personal_scores(snap, context) if context is not None else None
    listed = rank_similar(index.sources(item, position), query.mode, allowed, query.limit, personal)
    ids = snap.catalog.item_ids
    items = [
        domain.ScoredItem(ids[p], float(s), r)
        for p, s, r in zip(
            listed.positions.tolist(), listed.scores.tolist(), listed.reasons, strict=True
        )
    ]
    source = f"SIMILAR_{listed.mode.value}"
    return Unserved(items, source, snap.model_version, listed.fallback_reason, listed.mode)


def together_list(
    snap: ServingSnapshot,
    index: SimilarityIndex | None,
    query: TogetherQuery,
    items: list[ItemText],
    context: domain.UserContext | None,
    *,
    why_none: str = "",
) -> Unserved:
    """GetFrequentlyTogether's list: the basket's rules, else its blended neighbours, else
    trending (``why_none`` saying why when there is no neighbour index)."""
    allowed = allowed_mask(snap, context, query.exclude_item_ids, query.categories)
    allowed[snap.catalog.indices(query.item_ids)] = False
    if index is None:
        return trending_list(snap, allowed, query.limit, why_none, "TOGETHER_TRENDING")
    scores = index.together(query.item_ids)
    picked = (
        np.zeros(0, dtype=np.int64)
        if scores is None
        else top_positions(scores, allowed, query.limit, positive=True)
    )
    if scores is not None and picked.size:
        ids = snap.catalog.item_ids
        found = [
            domain.ScoredItem(ids[p], float(scores[p]), "frequently_together")
            for p in picked.tolist()
        ]
        return Unserved(found, "TOGETHER_RULES", snap.model_version)
    # No rule links the basket to anything allowed: the basket's blended neighbours.
    total = np.zeros(len(snap.catalog), dtype=np.float32)
    reasons: dict[int, str] = {}
    positions = snap.catalog.position
    for sources in index.sources_of([(text, positions.get(text.item_id)) for text in items]):
        listed = rank_similar(sources, SimilarityMode.AUTO, allowed, query.limit)
        for p, s, r in zip(
            listed.positions.tolist(), listed.scores.tolist(), listed.reasons, strict=True
        ):
            total[p] += s
            reasons.setdefault(p, r)
    picked = top_positions(total, allowed, query.limit, positive=True)
    if picked.size == 0:
        return trending_list(
            snap,
            allowed,
            query.limit,
            "no frequently-together rules or neighbours for these items" + TRENDING_FALLBACK,
            "TOGETHER_TRENDING",
        )
    ids = snap.catalog.item_ids
    found = [domain.ScoredItem(ids[p], float(total[p]), reasons[p]) for p in picked.tolist()]
    return Unserved(found, "TOGETHER_SIMILAR", snap.model_version, NO_RULES)


def allowed_mask(
    snap: ServingSnapshot,
    context: domain.UserContext | None,
    excluded: frozenset[str],
    categories: frozenset[str],
) -> npt.NDArray[np.bool_]:
    catalog = snap.catalog
    if categories:
        allowed = catalog.category_mask(categories)
    else:
        allowed = np.ones(len(catalog), dtype=np.bool_)
    blocked = [excluded]
    if context is not None:
        blocked += [context.seen_item_ids, context.dismissed_item_ids]
    for ids in blocked:
        if ids:
            allowed[catalog.indices(ids)] = False
    return allowed


def personal_scores(snap: ServingSnapshot, context: domain.UserContext) -> PersonalScores | None:
    """The user's HYBRID scores of a pool of positions (the light personalisation); None when
    the model cannot place the user. Only the pool is scored, not the whole catalogue."""
    model = snap.model
    if model is None:
        return None
    weights = snap.config.event_weights
    vector = model.user_vector(domain.Algorithm.HYBRID, context, snap.catalog.position, weights)
    if vector is None:
        return None
    items = model.hybrid

    def pool_scores(pool: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return score_items(items[pool], vector)

    return pool_scores


def trending_list(
    snap: ServingSnapshot,
    allowed: npt.NDArray[np.bool_],
    limit: int,
    why: str,
    source: str,
) -> Unserved:
    picked = top_positions(snap.trending, allowed, limit, positive=True)
    ids = snap.catalog.item_ids
    items = [domain.ScoredItem(ids[p], float(snap.trending[p]), "trending") for p in picked]
    return Unserved(items, source, "", why)
