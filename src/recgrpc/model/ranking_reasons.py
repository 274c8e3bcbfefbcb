"""The sources ranking tries, and the reasons it gives for a list not personalised or empty."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.catalog import CatalogIndex

if TYPE_CHECKING:
    from recgrpc.model.ranking import ServingSnapshot

NOTHING_KNOWN = "no history or preferences for this user yet"


def _candidate_sources(
    requested: Algorithm, has_behaviour: bool, has_profile: bool
) -> tuple[Algorithm, ...]:
    """Sources to try in order; the first is what the caller asked for (or AUTO's pick)."""
    if requested == Algorithm.AUTO:
        if has_behaviour:
            return (Algorithm.HYBRID, Algorithm.CONTENT)
        if has_profile:
            return (Algorithm.CONTENT, Algorithm.HYBRID)
        return ()
    if requested == Algorithm.COLLABORATIVE:
        return (Algorithm.COLLABORATIVE, Algorithm.HYBRID)
    if requested == Algorithm.HYBRID:
        return (Algorithm.HYBRID, Algorithm.CONTENT)
    return (requested,)


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


def _requested_but(algorithm: Algorithm, why: str) -> str:
    return f"{algorithm.value.lower()} requested, but {why}"


def _why_not_personalised(context: domain.UserContext, positions: Mapping[str, int]) -> str:
    """What the user has that the model cannot use, when no personalised source could rank.

    Reached only for a user the model does not know: with none of their preferences or
    attributes among its features and no positive event on an item in the catalogue.
    """
    parts = []
    if context.preferences:
        parts.append("this user's preferred categories are not in the model")
    if context.attributes:
        parts.append("their attributes are not in the model")
    touched = {event.item_id for event in context.recent}
    if touched:
        dismissed = touched & context.dismissed_item_ids
        gone = {item for item in touched - dismissed if item not in positions}
        what = []
        if dismissed:
            what.append("were dismissed")
        if gone:
            what.append("are not in the catalogue any more")
        if touched - dismissed - gone:  # in the catalogue, but no positive weight in total
            what.append("count against the item (disliked, rated low)")
        parts.append("the items they interacted with " + " or ".join(what))
    if not parts:
        return NOTHING_KNOWN
    return "; ".join(parts) + ": trending instead"


def _why_empty(
    snap: ServingSnapshot,
    context: domain.UserContext,
    query: domain.RecommendationQuery,
    source: Algorithm,
) -> str:
    """Why a list came out empty (names no caller text: reasons are stored and bounded)."""
    catalog = snap.catalog
    if len(catalog) == 0:
        return "the catalogue has no active items"
    if query.categories and not catalog.category_mask(query.categories).any():
        return "no active item is in the requested categories"
    if not allowed_mask(catalog, context, query).any():
        where = " in the requested categories" if query.categories else ""
        return f"every active item{where} was already seen, dismissed or excluded"
    if source == Algorithm.COLLABORATIVE:
        return "none of the remaining items was in the model's training data"
    if source == Algorithm.CONTENT:
        return "none of the remaining items has categories or tags the model knows"
    return "none of the remaining items is known to the model"
