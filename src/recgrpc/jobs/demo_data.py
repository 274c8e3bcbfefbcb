"""The demo world's shapes and vocabulary: categories and tags, ground truth, generated rows.

A deterministic demo world: catalogue, users with tastes, history with planted churn.

``generate_demo(seed=...)`` returns plain domain objects plus the ground truth that produced them
(each user's taste, who drifts, who churns), so tests and benchmarks can check that a model learns
what was planted. The same seed and ``now`` always give the same data. Everything per event is
drawn with vectorised numpy; only per-user and per-item set-up loops in Python.

What is planted:

- 20-40 categories of different sizes; neighbouring categories in ``CATEGORY_TAGS`` are related
  (music next to music), so items' secondary categories and users' tastes cluster.
- Items have 1-3 categories, tags and a format, are created continuously over the past year, and
  have a Zipf-like appeal; newly created items draw extra attention for a few weeks.
- Users like 2-4 categories (weights from a Dirichlet); ~70% state them as preferences. Most
  events fall in the taste; the rest explore by global popularity. Some users drift to new tastes
  halfway through their history (their stored preferences keep the old taste).
- Interaction types are mostly views, then clicks, likes, add-to-carts, purchases; ratings (1-5)
  are high on-taste and low off-taste.
- Served lists (impressions) with feedback: on-taste items get clicked, off-taste ones dismissed.
- ~30% of the users who stay take one break of 1-4 weeks (no activity) and come back.
- ~25% of users churn: most fade over their last weeks (fewer clicks, more off-taste views and
  dismissals), 30% stop after steady activity; all stop at least ``churn_quiet_days`` (31) days
  before ``now``; everyone else stays active until ``now``.
- Activity is lumpy (``demo_rhythm``): busier weekends, week-to-week noise, and half of the
  users who stay visit only in sessions 10-40 days apart, so recency alone cannot separate
  churners.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from recgrpc import domain

DAY_SECONDS = 86_400.0
DEMO_NAMESPACE = uuid.UUID("6f0c4a52-1d55-4c1e-9a53-2f7d6b0e3c41")
"""Namespace for deterministic recset ids (uuid5 of the seed and the list's number)."""

# Ordered so that neighbours are related: secondary categories and tastes are drawn nearby.
CATEGORY_TAGS: Mapping[str, tuple[str, ...]] = {
    "jazz": ("saxophone", "bebop", "live-session"),
    "blues": ("guitar", "delta", "soul"),
    "classical": ("orchestra", "piano", "opera"),
    "rock": ("guitar", "indie", "live-session"),
    "electronic": ("techno", "ambient", "synth"),
    "hip-hop": ("rap", "beats", "freestyle"),
    "film": ("director", "festival", "review"),
    "tv-series": ("drama", "binge", "episode"),
    "comics": ("superhero", "manga", "graphic-novel"),
    "sci-fi": ("space-opera", "dystopia", "robots"),
    "fantasy": ("dragons", "epic", "magic"),
    "thriller": ("crime", "mystery", "detective"),
    "history": ("ancient", "war", "biography"),
    "science": ("physics", "biology", "research"),
    "space": ("astronomy", "rockets", "planets"),
    "programming": ("python", "rust", "algorithms"),
    "design": ("typography", "ux", "branding"),
    "photography": ("portrait", "landscape", "camera"),
    "travel": ("backpacking", "city-break", "islands"),
    "hiking": ("trails", "mountains", "gear"),
    "cycling": ("road-bike", "gravel", "commute"),
    "running": ("marathon", "trail-running", "training-plan"),
    "yoga": ("mindfulness", "stretching", "breathing"),
    "cooking": ("recipes", "vegetarian", "one-pot"),
    "baking": ("sourdough", "pastry", "cakes"),
    "gardening": ("vegetables", "houseplants", "compost"),
    "home-decor": ("minimalist", "lighting", "small-spaces"),
    "diy": ("woodwork", "tools", "repair"),
    "parenting": ("toddlers", "school", "sleep"),
    "pets": ("dogs", "cats", "training"),
    "personal-finance": ("budgeting", "investing", "saving"),
    "careers": ("interviews", "remote-work", "leadership"),
    "fashion": ("streetwear", "vintage", "sustainable"),
    "skincare": ("routine", "sunscreen", "natural"),
    "football": ("premier-league", "tactics", "transfers"),
    "basketball": ("nba", "highlights", "playoffs"),
    "board-games": ("strategy", "party-games", "co-op"),
    "video-games": ("rpg", "indie-games", "esports"),
    "podcasting": ("interviews", "audio", "storytelling"),
    "languages": ("spanish", "japanese", "grammar"),
}
COMMON_TAGS = (
    "beginner",
    "advanced",
    "classic",
    "bestseller",
    "staff-pick",
    "quick",
    "in-depth",
    "award-winning",
    "budget",
    "premium",
)
FORMATS = ("article", "video", "podcast", "product")
ADJECTIVES = (
    "Essential",
    "Hidden",
    "Modern",
    "Complete",
    "Little",
    "Wild",
    "Quiet",
    "Bold",
    "Everyday",
    "Ultimate",
    "Curious",
    "Golden",
    "Urban",
    "Simple",
    "Lost",
    "Bright",
)
FORMS = {
    "article": ("Guide", "Notes", "Field Guide", "Handbook", "Primer"),
    "video": ("Masterclass", "Sessions", "Documentary", "Workshop", "Live"),
    "podcast": ("Talks", "Radio", "Hour", "Conversations", "Weekly"),
    "product": ("Kit", "Set", "Box", "Collection", "Bundle"),
}
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "AU")
COUNTRY_SHARE = (0.3, 0.12, 0.1, 0.08, 0.12, 0.08, 0.06, 0.05, 0.05, 0.04)
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_SHARE = (0.2, 0.32, 0.24, 0.14, 0.1)
PLATFORMS = ("ios", "android", "web")
PLATFORM_SHARE = (0.4, 0.35, 0.25)

# Interaction mix: rows are on-taste, off-taste, and fading (a churner's last weeks).
TYPES = (
    domain.InteractionType.VIEW,
    domain.InteractionType.CLICK,
    domain.InteractionType.LIKE,
    domain.InteractionType.BOOKMARK,
    domain.InteractionType.ADD_TO_CART,
    domain.InteractionType.PURCHASE,
    domain.InteractionType.RATING,
    domain.InteractionType.SHARE,
)
TYPE_MIX = np.array(
    [
        [0.56, 0.20, 0.08, 0.03, 0.04, 0.03, 0.045, 0.015],
        [0.78, 0.12, 0.02, 0.01, 0.02, 0.005, 0.04, 0.005],
        [0.80, 0.09, 0.02, 0.01, 0.02, 0.005, 0.05, 0.005],
    ]
)
ON_TASTE_RATINGS = (np.array([2.0, 3.0, 4.0, 5.0]), np.array([0.05, 0.15, 0.4, 0.4]))
OFF_TASTE_RATINGS = (np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.3, 0.35, 0.25, 0.1]))
LIST_LENGTH = 8
"""Items per demo impression (served list)."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class UserProfile:
    """Ground truth for one demo user (what the generator planted, not what is stored)."""

    user_id: str
    taste: Mapping[str, float]
    """True interests at the end of the history (after any drift): category -> weight, sum 1."""
    initial_taste: Mapping[str, float]
    """Interests before any drift; equals ``taste`` for users who do not drift."""
    drift_at: datetime | None
    """When the user switched from ``initial_taste`` to ``taste``; None if they never did."""
    churner: bool
    """Planted churner: activity fades and stops at ``active_until``, well before ``now``."""
    active_from: datetime
    """Start of the user's activity window."""
    active_until: datetime
    """End of the activity window: ``now`` for users who stay, earlier for churners."""
    fade_from: datetime | None
    """When a churner's activity starts fading; None for users who stay."""
    states_preferences: bool
    """Whether the user's (initial) taste is stored as preferences."""
    break_from: datetime | None = None
    """Start of a loyal user's break (no activity at all), if they take one."""
    break_days: float = 0.0
    """Length of that break in days (7-25)."""


@dataclass(frozen=True, slots=True)
class DemoImpression:
    """A served list the demo user saw (a row of ``impressions``)."""

    recset_id: str
    user_id: str
    item_ids: tuple[str, ...]
    served_at: datetime
    algorithm: domain.Algorithm = domain.Algorithm.POPULAR


@dataclass(frozen=True, slots=True)
class DemoFeedback:
    """Feedback on an impression's item, with the time it was given."""

    feedback: domain.Feedback
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DemoData:
    """Everything ``generate_demo`` produced; lists are ordered (interactions by time)."""

    seed: int
    now: datetime
    history_days: float
    categories: tuple[str, ...]
    items: list[domain.Item]
    users: list[domain.User]
    interactions: list[domain.Interaction]
    impressions: list[DemoImpression]
    feedback: list[DemoFeedback]
    profiles: dict[str, UserProfile] = field(repr=False)

    @property
    def churner_ids(self) -> frozenset[str]:
        """Users planted as churners."""
        return frozenset(u for u, p in self.profiles.items() if p.churner)

    @property
    def drifter_ids(self) -> frozenset[str]:
        """Users whose taste changes during their history."""
        return frozenset(u for u, p in self.profiles.items() if p.drift_at is not None)

    def last_activity(self) -> dict[str, datetime]:
        """Each user's latest interaction time."""
        last: dict[str, datetime] = {}
        for event in self.interactions:  # sorted by time, so the last write wins
            last[event.user_id] = event.occurred_at
        return last

    def taste_at(self, user_id: str, when: datetime) -> Mapping[str, float]:
        """The user's true taste at ``when`` (before or after their drift)."""
        profile = self.profiles[user_id]
        if profile.drift_at is not None and when < profile.drift_at:
            return profile.initial_taste
        return profile.taste


@dataclass(frozen=True, slots=True)
class DemoWriteReport:
    """What ``write_demo`` stored: rows in the demo, and how many of them were new."""

    items: int
    users: int
    preferences: int
    interactions: int
    new_interactions: int
    impressions: int
    new_impressions: int
    new_feedback: int
