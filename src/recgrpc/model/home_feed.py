"""The home feed: named shelves for one user from one context and one scoring pass.

Shelves are filled in a fixed order (for_you, because_you_liked, top_categories, trending,
new_arrivals, diverse_picks) and each takes only items no earlier shelf took, so no item is on
two shelves. The user's vector is scored once against every item; for_you and the category
shelves rank from that one score vector, the others from trending, freshness or neighbours.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.feed_orders import feed_orders, first_allowed
from recgrpc.model.ranking import SOURCE_REASON, ServingSnapshot
from recgrpc.model.rerank import FRESH_REASON, rerank
from recgrpc.model.scoring import scores as score_items
from recgrpc.model.similar import (
    ItemText,
    PersonalScores,
    SimilarityIndex,
    SimilarityMode,
    rank_similar,
    top_positions,
)
from recgrpc.model.weights import EventWeights

F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

TOP_CATEGORIES = 3
RECENT_CATEGORY_WEIGHT = 1.0


class ShelfKind(enum.StrEnum):
    FOR_YOU = "for_you"
    BECAUSE_YOU_LIKED = "because_you_liked"
    TOP_CATEGORIES = "top_categories"
    TRENDING = "trending"
    NEW_ARRIVALS = "new_arrivals"
    DIVERSE_PICKS = "diverse_picks"


ORDER = tuple(ShelfKind)
"""The order shelves are filled (and returned) in: earlier shelves get first pick."""


@dataclass(frozen=True)
class HomeFeedQuery:
    user_id: str
    shelf_size: int
    shelves: frozenset[ShelfKind] = frozenset(ORDER)
    exclude_item_ids: frozenset[str] = frozenset()
    platform: str = ""


@dataclass(frozen=True)
class ShelfList:
    kind: ShelfKind
    name: str
    title: str
    items: Sequence[domain.ScoredItem]
    source: str
    """Stored as the impression's algorithm (``HOME_FOR_YOU`` ...)."""
    model_version: str = ""
    fallback_reason: str = ""


@dataclass(frozen=True)
class HomeFeed:
    shelves: list[ShelfList]
    model_version: str
    omitted: list[str] = field(default_factory=list)
    """Why shelves asked for are missing, one sentence each."""


def liked_anchor(context: domain.UserContext, weights: EventWeights) -> str | None:
    """The user's most recent positive item (the because_you_liked shelf's subject); searches
    are no item the user liked."""
    for event in context.recent:
        if event.type == domain.InteractionType.SEARCH or not event.item_id:
            continue
        if event.item_id in context.dismissed_item_ids:
            continue
        if weights.weight(event.type.value, event.value) > 0:
            return event.item_id
    return None


def inactivity(context: domain.UserContext, now: datetime, stale_after_days: float) -> str:
    """Why the user gets no for_you shelf ("" when they get one)."""
    if not context.recent:
        return "for_you left out: a new user with no activity yet"
    newest = max(e.occurred_at for e in context.recent)
    if now - newest > timedelta(days=stale_after_days):
        return f"for_you left out: no activity in the last {stale_after_days:g} days"
    return ""


def build_feed(
    snap: ServingSnapshot,
    index: SimilarityIndex | None,
    context: domain.UserContext,
    query: HomeFeedQuery,
    *,
    now: datetime,
    stale_after_days: float,
    anchor: ItemText | None,
) -> HomeFeed:
    catalog = snap.catalog
    n = len(catalog)
    allowed = np.ones(n, dtype=np.bool_)
    for blocked in (context.seen_item_ids, context.dismissed_item_ids, query.exclude_item_ids):
        if blocked:
            allowed[catalog.indices(blocked)] = False
    personal, source = _personal_scores(snap, context)
    size = query.shelf_size
    shelves: list[ShelfList] = []
    omitted: list[str] = []
    version = snap.model_version

    def free() -> Mask:
        return allowed.copy()

    def take(positions: npt.NDArray[np.int64]) -> None:
        allowed[positions] = False

    for kind in ORDER:
        if kind not in query.shelves:
            continue
        if kind == ShelfKind.FOR_YOU:
            why = inactivity(context, now, stale_after_days)
            if not why and personal is None:
                why = "for_you left out: " + (
                    "no trained model is active"
                    if snap.model is None
                    else "nothing known about this user can rank items"
                )
            if why:
                omitted.append(why)
                continue
            assert personal is not None
            shown = free() & np.isfinite(personal)
            result = rerank(
                np.where(shown, personal, np.float32(-np.inf)).astype(np.float32),
                size,
                categories=catalog.categories,
                fresh=snap.freshness,
                fresh_items=snap.fresh_items,
                config=snap.config.rerank,
            )
            reason = SOURCE_REASON[source]
            items = [
                domain.ScoredItem(catalog.item_ids[i], s, FRESH_REASON if f else reason)
                for i, s, f in zip(
                    result.indices.tolist(),
                    result.scores.tolist(),
                    result.fresh.tolist(),
                    strict=True,
                )
            ]
            take(result.indices)
            shelves.append(
                ShelfList(kind, kind.value, "Recommended for you", items, "HOME_FOR_YOU", version)
            )
        elif kind == ShelfKind.BECAUSE_YOU_LIKED:
            if anchor is None or index is None:
                omitted.append(
                    "because_you_liked left out: "
                    + ("no liked item yet" if anchor is None else "no neighbour table is loaded")
                )
                continue
            mask = free()
            position = catalog.position.get(anchor.item_id)
            if position is not None:
                mask[position] = False
            listed = rank_similar(
                index.sources(anchor, position),
                SimilarityMode.AUTO,
                mask,
                size,
                None if personal is None else _pool_of(personal),
            )
            items = _scored(catalog.item_ids, listed.positions, listed.scores, listed.reasons)
            take(listed.positions)
            title = f"Because you liked {anchor.title or anchor.item_id}"
            shelves.append(
                ShelfList(
                    kind,
                    f"{kind.value}:{anchor.item_id}",
                    title,
                    items,
                    "HOME_BECAUSE_YOU_LIKED",
                    version,
                    listed.fallback_reason,
                )
            )
        elif kind == ShelfKind.TOP_CATEGORIES:
            categories = strongest_categories(context, catalog.position, catalog.categories)
            if not categories:
                omitted.append("top_categories left out: no preferred or engaged categories")
                continue
            scores = personal if personal is not None else snap.trending
            reason = SOURCE_REASON[source] if personal is not None else "trending"
            made = 0
            for category in categories:  # strongest first; one with nothing left is skipped
                members = catalog.by_category.get(category)
                if members is None:
                    continue
                values = scores[members]
                picked = members[
                    top_positions(values, allowed[members] & np.isfinite(values), size)
                ]
                if picked.size == 0:
                    continue
                take(picked)
                shelves.append(
                    ShelfList(
                        kind,
                        f"{kind.value}:{category}",
                        f"Top picks in {category}",
                        _scored(catalog.item_ids, picked, scores[picked], [reason] * picked.size),
                        "HOME_TOP_CATEGORIES",
                        version if personal is not None else "",
                    )
                )
                made += 1
                if made == TOP_CATEGORIES:
                    break
            if made == 0:
                omitted.append("top_categories left out: nothing unseen in the user's categories")
        elif kind == ShelfKind.TRENDING:
            picked = first_allowed(feed_orders(snap).trending, allowed, size)
            why = "" if picked.size else "no events in the trending window"
            take(picked)
            items = _scored(
                catalog.item_ids, picked, snap.trending[picked], ["trending"] * picked.size
            )
            shelves.append(
                ShelfList(kind, kind.value, "Trending now", items, "HOME_TRENDING", "", why)
            )
        elif kind == ShelfKind.NEW_ARRIVALS:
            picked = first_allowed(feed_orders(snap).created, allowed, size)
            take(picked)
            fresh = (
                snap.freshness[picked]
                if snap.freshness is not None
                else catalog.created_at[picked].astype(np.float32)
            )
            items = _scored(catalog.item_ids, picked, fresh, ["new_arrival"] * picked.size)
            shelves.append(ShelfList(kind, kind.value, "New arrivals", items, "HOME_NEW_ARRIVALS"))
        else:
            picked, why = diverse_picks(context, snap, allowed, size)
            take(picked)
            items = _scored(
                catalog.item_ids, picked, snap.trending[picked], ["diverse"] * picked.size
            )
            shelves.append(
                ShelfList(
                    kind, kind.value, "Something different", items, "HOME_DIVERSE_PICKS", "", why
                )
            )
    # An empty shelf is left out, and the feed says why.
    for shelf in shelves:
        if not shelf.items:
            omitted.append(f"{shelf.name} left out: {shelf.fallback_reason or 'nothing to show'}")
    return HomeFeed([s for s in shelves if s.items], version, omitted)


def _personal_scores(
    snap: ServingSnapshot, context: domain.UserContext
) -> tuple[F32 | None, Algorithm]:
    """The one scoring pass: the user's HYBRID vector (CONTENT when only a profile is known)
    against every item; None when the model cannot place this user."""
    model = snap.model
    if model is None:
        return None, Algorithm.POPULAR
    weights = snap.config.event_weights
    for source in (Algorithm.HYBRID, Algorithm.CONTENT):
        vector = model.user_vector(source, context, snap.catalog.position, weights)
        if vector is not None:
            scores = score_items(model.items_for(source), vector)
            # Items neither trained on nor described by a known feature have no score.
            scores[model.unscored_by(Algorithm.HYBRID)] = np.float32(-np.inf)
            return scores, source
    return None, Algorithm.POPULAR


def strongest_categories(
    context: domain.UserContext,
    positions: Mapping[str, int],
    categories: Sequence[Sequence[str]],
) -> list[str]:
    """The user's categories, strongest first: preferences (each normalised to its share) plus
    the categories of their recent items. The feed makes shelves of the first 2-3 that still
    have unseen items."""
    strength: dict[str, float] = {}
    total = sum(s for s in context.preferences.values() if s > 0) or 1.0
    for category, score in context.preferences.items():
        if score > 0:
            strength[category] = strength.get(category, 0.0) + score / total
    recent = [positions[e.item_id] for e in context.recent if e.item_id in positions]
    for pos in recent:
        for category in categories[pos]:
            share = RECENT_CATEGORY_WEIGHT / (len(recent) * len(categories[pos]))
            strength[category] = strength.get(category, 0.0) + share
    return sorted(strength, key=lambda c: (-strength[c], c))


def diverse_picks(
    context: domain.UserContext, snap: ServingSnapshot, allowed: Mask, size: int
) -> tuple[npt.NDArray[np.int64], str]:
    """The most popular allowed item of each category the user never engaged with, round-robin
    across those categories (most popular first)."""
    catalog = snap.catalog
    engaged = set(context.preferences)
    for event in context.recent:
        pos = catalog.position.get(event.item_id)
        if pos is not None:
            engaged.update(catalog.categories[pos])
    others = sorted(set(catalog.by_category) - engaged)
    if not others:
        return np.zeros(0, dtype=np.int64), "the user has engaged with every category"
    orders = feed_orders(snap).by_category
    blocked = allowed.size - int(np.count_nonzero(allowed))
    # Only a category's best ``size`` allowed items can be picked.
    queues = [first_allowed(orders[c], allowed, size, blocked).tolist() for c in others]
    queues.sort(key=lambda q: -float(snap.trending[q[0]]) if q else 0.0)
    chosen: list[int] = []
    taken: set[int] = set()
    depth = 0
    while len(chosen) < size and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and queue[depth] not in taken and len(chosen) < size:
                chosen.append(queue[depth])
                taken.add(queue[depth])
        depth += 1
    why = "" if chosen else "nothing left in the categories the user has not engaged with"
    return np.array(chosen, dtype=np.int64), why


def _pool_of(scores: F32) -> PersonalScores:
    def pool_scores(pool: npt.NDArray[np.int64]) -> F32:
        return scores[pool]

    return pool_scores


def _scored(
    ids: Sequence[str], positions: npt.NDArray[np.int64], scores: F32, reasons: Sequence[str]
) -> list[domain.ScoredItem]:
    return [
        domain.ScoredItem(ids[p], float(s), r)
        for p, s, r in zip(positions.tolist(), scores.tolist(), reasons, strict=True)
    ]
