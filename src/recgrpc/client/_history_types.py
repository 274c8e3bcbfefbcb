"""The search and history results of both clients: search hits, a user's numbers, stored events
and stored churn predictions, each page with its token for the next."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from recgrpc.client._types import ChurnFactor, InteractionType, RiskLevel


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One item of a search result."""

    item_id: str
    score: float
    rank: int
    reason: str
    """``"search"``, ``"search_personalised"``, or ``"trending"`` when nothing matched."""
    title: str
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchResults:
    """A served search list. ``fallback_reason`` is ``"no_search_matches"`` when nothing
    matched the query and the items are trending ones instead."""

    recset_id: str
    items: tuple[SearchHit, ...]
    fallback_reason: str
    model_version: str
    generated_at: datetime

    @property
    def item_ids(self) -> list[str]:
        return [hit.item_id for hit in self.items]


@dataclass(frozen=True, slots=True)
class UserStats:
    """One user's numbers; the churn fields are ``None`` when no prediction was stored."""

    user_id: str
    lists_served: int
    items_shown: int
    items_clicked: int
    items_dismissed: int
    click_through_rate: float
    interactions: dict[InteractionType, int]
    total_interactions: int
    first_activity: datetime | None
    last_activity: datetime | None
    churn_risk: float | None
    risk_level: RiskLevel | None
    churn_predicted_at: datetime | None


@dataclass(frozen=True, slots=True)
class InteractionRecord:
    """A stored event; ``item_id`` is empty for SEARCH events (the query is in metadata)."""

    event_id: str
    item_id: str
    type: InteractionType | None
    value: float
    content_type: str
    platform: str
    metadata: dict[str, str]
    recset_id: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class StoredChurnPrediction:
    risk: float
    level: RiskLevel | None
    factors: tuple[ChurnFactor, ...]
    model_version: str
    predicted_at: datetime
    as_of: datetime
    horizon_days: int


@dataclass(frozen=True, slots=True)
class InteractionPage:
    """Newest first; pass ``next_page_token`` back for the next page (empty: the last)."""

    interactions: tuple[InteractionRecord, ...]
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class ChurnPredictionPage:
    predictions: tuple[StoredChurnPrediction, ...]
    next_page_token: str = ""
