"""Public value types of the client: enums, what callers send, and what calls return.

Plain Python on purpose: results are frozen dataclasses with aware UTC datetimes, so callers never
handle protobuf messages.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


def _lookup(cls: type[enum.StrEnum], value: object, prefix: str) -> enum.StrEnum | None:
    """Case-insensitive lookup that also accepts the proto's prefixed name."""
    if not isinstance(value, str):
        return None
    key = value.strip().upper().removeprefix(prefix)
    return cls.__members__.get(key)


class Algorithm(enum.StrEnum):
    """Which source ranks the items. ``Algorithm("hybrid")`` and ``"ALGORITHM_HYBRID"`` work."""

    AUTO = "AUTO"
    HYBRID = "HYBRID"
    COLLABORATIVE = "COLLABORATIVE"
    CONTENT = "CONTENT"
    POPULAR = "POPULAR"

    @classmethod
    def _missing_(cls, value: object) -> Algorithm | None:
        found = _lookup(cls, value, "ALGORITHM_")
        return found if isinstance(found, Algorithm) else None


class InteractionType(enum.StrEnum):
    """What a user did with an item. ``InteractionType("click")`` is ``InteractionType.CLICK``."""

    VIEW = "VIEW"
    CLICK = "CLICK"
    LIKE = "LIKE"
    COMMENT = "COMMENT"
    SHARE = "SHARE"
    PURCHASE = "PURCHASE"
    ADD_TO_CART = "ADD_TO_CART"
    RATING = "RATING"
    BOOKMARK = "BOOKMARK"
    DISLIKE = "DISLIKE"
    SEARCH = "SEARCH"

    @classmethod
    def _missing_(cls, value: object) -> InteractionType | None:
        found = _lookup(cls, value, "INTERACTION_TYPE_")
        return found if isinstance(found, InteractionType) else None


class RiskLevel(enum.StrEnum):
    """Churn risk band."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"

    @classmethod
    def _missing_(cls, value: object) -> RiskLevel | None:
        found = _lookup(cls, value, "RISK_LEVEL_")
        return found if isinstance(found, RiskLevel) else None


@dataclass(frozen=True, slots=True)
class Item:
    """A catalogue item to upsert. Inactive items are stored but never recommended."""

    item_id: str
    title: str = ""
    categories: Sequence[str] = ()
    tags: Sequence[str] = ()
    created_at: datetime | None = None
    """Publication time (timezone-aware); the server uses the first upsert's time when unset."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    active: bool = True


@dataclass(frozen=True, slots=True)
class User:
    """A user to upsert; ``preferences`` (category -> score) replace the stored ones."""

    user_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    preferences: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    """One entry of a served list."""

    item_id: str
    score: float
    rank: int
    """1-based position in the list."""
    reason: str
    """The source that produced the item: ``"hybrid"``, ``"trending"``, ..."""


@dataclass(frozen=True, slots=True)
class Recommendations:
    """A served list (an impression). Pass ``recset_id`` back on interactions and feedback."""

    recset_id: str
    items: tuple[RecommendedItem, ...]
    algorithm: Algorithm
    """The source actually used, which may differ from the one asked for."""
    model_version: str
    fallback_reason: str
    """Empty when the requested personalised source was used; otherwise why it was not."""
    generated_at: datetime

    @property
    def item_ids(self) -> list[str]:
        """The item ids in rank order."""
        return [item.item_id for item in self.items]


@dataclass(frozen=True, slots=True)
class InteractionLogged:
    """Outcome of ``log_interaction``: ``duplicate`` is true when the event was already stored."""

    event_id: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ChurnFactor:
    """A feature behind a churn score; a positive ``contribution`` raises the risk."""

    name: str
    value: float
    contribution: float


@dataclass(frozen=True, slots=True)
class ChurnPrediction:
    """How likely ``user_id`` is to be inactive for ``horizon_days``."""

    user_id: str
    risk: float
    """Probability in 0..1."""
    level: RiskLevel
    factors: tuple[ChurnFactor, ...]
    model_version: str
    predicted_at: datetime
    horizon_days: int


__all__ = [
    "Algorithm",
    "ChurnFactor",
    "ChurnPrediction",
    "InteractionLogged",
    "InteractionType",
    "Item",
    "Recommendations",
    "RecommendedItem",
    "RiskLevel",
    "User",
]
