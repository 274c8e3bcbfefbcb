"""Value types of the discovery calls: similar items, frequently together, the home feed."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from recgrpc.client._types import RecommendedItem, _lookup


class SimilarityMode(enum.StrEnum):
    """What "similar" means: ``AUTO`` blends the others; ``SimilarityMode("content")`` works."""

    AUTO = "AUTO"
    BEHAVIOUR = "BEHAVIOUR"
    """Users who liked this also liked (co-occurrence)."""
    CONTENT = "CONTENT"
    """Shared categories, tags and title words."""
    EMBEDDING = "EMBEDDING"
    """Cosine of the recommender's item vectors."""

    @classmethod
    def _missing_(cls, value: object) -> SimilarityMode | None:
        found = _lookup(cls, value, "SIMILARITY_MODE_")
        return found if isinstance(found, SimilarityMode) else None


class ShelfKind(enum.StrEnum):
    """A home-feed shelf. ``ShelfKind("for_you")`` is ``ShelfKind.FOR_YOU``."""

    FOR_YOU = "FOR_YOU"
    BECAUSE_YOU_LIKED = "BECAUSE_YOU_LIKED"
    TRENDING = "TRENDING"
    NEW_ARRIVALS = "NEW_ARRIVALS"
    TOP_CATEGORIES = "TOP_CATEGORIES"
    DIVERSE_PICKS = "DIVERSE_PICKS"

    @classmethod
    def _missing_(cls, value: object) -> ShelfKind | None:
        found = _lookup(cls, value, "SHELF_KIND_")
        return found if isinstance(found, ShelfKind) else None


@dataclass(frozen=True, slots=True)
class SimilarItems:
    """Items like one item. ``recset_id`` names the list (an impression when a user was given)."""

    recset_id: str
    items: tuple[RecommendedItem, ...]
    mode: SimilarityMode
    """The mode actually used (``AUTO`` when the one asked for had nothing for this item)."""
    model_version: str
    fallback_reason: str
    generated_at: datetime

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


@dataclass(frozen=True, slots=True)
class FrequentlyTogether:
    """Items that go with an item or a basket, best first."""

    recset_id: str
    items: tuple[RecommendedItem, ...]
    model_version: str
    fallback_reason: str
    generated_at: datetime

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


@dataclass(frozen=True, slots=True)
class Shelf:
    """One shelf of the home feed, its own served list (``recset_id``)."""

    kind: ShelfKind
    name: str
    """``for_you``, ``because_you_liked:<item_id>``, ``top_categories:<category>``, ..."""
    title: str
    recset_id: str
    items: tuple[RecommendedItem, ...]
    fallback_reason: str

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


@dataclass(frozen=True, slots=True)
class HomeFeed:
    """The shelves of a user's home page; no item is on two shelves."""

    shelves: tuple[Shelf, ...]
    model_version: str
    fallback_reason: str
    """Why shelves asked for are missing (a new or stale user gets no ``for_you``)."""
    generated_at: datetime

    def shelf(self, name: str) -> Shelf | None:
        """The shelf called ``name`` (``"trending"``, ``"top_categories:jazz"``), if present."""
        return next((s for s in self.shelves if s.name == name), None)


__all__ = ["FrequentlyTogether", "HomeFeed", "Shelf", "ShelfKind", "SimilarItems", "SimilarityMode"]
