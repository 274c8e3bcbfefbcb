"""Domain types shared by the server, the model and the database layers.

Plain Python only: no gRPC, numpy or SQLAlchemy here, so every layer can import it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only clock the layers below the server use)."""
    return datetime.now(UTC)


class InteractionType(enum.StrEnum):
    """What a user did with an item. Stored by short name; the proto enum adds a prefix."""

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
    """A query the user searched for (``metadata["query"]``); no item."""

    @classmethod
    def parse(cls, name: str) -> InteractionType:
        """Accept ``click``, ``CLICK`` or ``INTERACTION_TYPE_CLICK``."""
        key = name.strip().upper().removeprefix("INTERACTION_TYPE_")
        try:
            return cls(key)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown interaction type {name!r} (known: {known})") from None


class Algorithm(enum.StrEnum):
    """Which source ranks the items."""

    AUTO = "AUTO"
    HYBRID = "HYBRID"
    COLLABORATIVE = "COLLABORATIVE"
    CONTENT = "CONTENT"
    POPULAR = "POPULAR"


class RiskLevel(enum.StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


@dataclass(frozen=True, slots=True)
class Interaction:
    event_id: str
    user_id: str
    item_id: str
    type: InteractionType
    occurred_at: datetime
    value: float = 0.0
    content_type: str = ""
    platform: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    recset_id: str = ""


@dataclass(frozen=True, slots=True)
class Feedback:
    user_id: str
    item_id: str
    recset_id: str
    clicked: bool
    dismissed: bool
    rating: float | None = None
    feedback_id: str = ""
    """Idempotency key: feedback with a stored ``feedback_id`` is not stored again."""


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    title: str = ""
    categories: Sequence[str] = ()
    tags: Sequence[str] = ()
    created_at: datetime | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    active: bool = True


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    preferences: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecommendationQuery:
    user_id: str
    limit: int
    algorithm: Algorithm = Algorithm.AUTO
    exclude_item_ids: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    platform: str = ""


@dataclass(frozen=True, slots=True)
class RecentInteraction:
    item_id: str
    type: InteractionType
    value: float
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class UserContext:
    """What the database knows about a user at request time; input to every ranking source."""

    user_id: str
    known: bool
    seen_item_ids: frozenset[str] = frozenset()
    dismissed_item_ids: frozenset[str] = frozenset()
    preferences: Mapping[str, float] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    # Most recent first; used to fold in users whose behaviour postdates the model.
    recent: Sequence[RecentInteraction] = ()


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class RecommendationList:
    """A ranked list as served: the items, the source actually used and why."""

    items: Sequence[ScoredItem]
    algorithm: Algorithm
    model_version: str = ""
    fallback_reason: str = ""


@dataclass(frozen=True, slots=True)
class ServedList:
    recset_id: str
    generated_at: datetime
    ranking: RecommendationList


@dataclass(frozen=True, slots=True)
class ChurnFactor:
    name: str
    value: float
    contribution: float


@dataclass(frozen=True, slots=True)
class ChurnPrediction:
    user_id: str
    risk: float
    level: RiskLevel
    factors: Sequence[ChurnFactor]
    model_version: str
    predicted_at: datetime
    as_of: datetime
    horizon_days: int
