"""A deterministic demo world: catalogue, users with tastes, history with planted churn.

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
- ~25% of users churn: their activity fades over the last weeks (fewer clicks, more off-taste
  views and dismissals) and stops at least ``churn_quiet_days`` (31) days before ``now``;
  everyone else stays active until ``now``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete

from recgrpc import domain
from recgrpc.db import bulk
from recgrpc.db import models as m
from recgrpc.db.engine import Database

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
_ADJECTIVES = (
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
_FORMS = {
    "article": ("Guide", "Notes", "Field Guide", "Handbook", "Primer"),
    "video": ("Masterclass", "Sessions", "Documentary", "Workshop", "Live"),
    "podcast": ("Talks", "Radio", "Hour", "Conversations", "Weekly"),
    "product": ("Kit", "Set", "Box", "Collection", "Bundle"),
}
_COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "AU")
_COUNTRY_SHARE = (0.3, 0.12, 0.1, 0.08, 0.12, 0.08, 0.06, 0.05, 0.05, 0.04)
_AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
_AGE_SHARE = (0.2, 0.32, 0.24, 0.14, 0.1)
_PLATFORMS = ("ios", "android", "web")
_PLATFORM_SHARE = (0.4, 0.35, 0.25)

# Interaction mix: rows are on-taste, off-taste, and fading (a churner's last weeks).
_TYPES = (
    domain.InteractionType.VIEW,
    domain.InteractionType.CLICK,
    domain.InteractionType.LIKE,
    domain.InteractionType.BOOKMARK,
    domain.InteractionType.ADD_TO_CART,
    domain.InteractionType.PURCHASE,
    domain.InteractionType.RATING,
    domain.InteractionType.SHARE,
)
_TYPE_MIX = np.array(
    [
        [0.56, 0.20, 0.08, 0.03, 0.04, 0.03, 0.045, 0.015],
        [0.78, 0.12, 0.02, 0.01, 0.02, 0.005, 0.04, 0.005],
        [0.80, 0.09, 0.02, 0.01, 0.02, 0.005, 0.05, 0.005],
    ]
)
_ON_TASTE_RATINGS = (np.array([2.0, 3.0, 4.0, 5.0]), np.array([0.05, 0.15, 0.4, 0.4]))
_OFF_TASTE_RATINGS = (np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.3, 0.35, 0.25, 0.1]))
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


def generate_demo(
    seed: int = 42,
    n_users: int = 3000,
    n_items: int = 2000,
    n_interactions: int = 100_000,
    now: datetime | None = None,
    *,
    n_categories: int = 30,
    history_days: float = 180.0,
    churn_fraction: float = 0.25,
    drift_fraction: float = 0.15,
    preference_fraction: float = 0.7,
    churn_quiet_days: float = 31.0,
    break_fraction: float = 0.3,
) -> DemoData:
    """Generate a demo world deterministically from ``seed`` (and ``now``).

    ``now`` defaults to the current time floored to the minute; pass it explicitly for data that is
    identical across runs. ``n_interactions`` is the exact number of interactions (organic events
    plus clicks on impressions). Churners' last activity is at least ``churn_quiet_days`` before
    ``now`` (just over the default 30-day churn horizon). Raises ``ValueError`` for sizes that
    cannot make a world.
    """
    if n_users < 1 or n_items < 2 or n_interactions < 1:
        raise ValueError("the demo needs at least 1 user, 2 items and 1 interaction")
    if not 2 <= n_categories <= len(CATEGORY_TAGS):
        raise ValueError(f"n_categories must be within 2..{len(CATEGORY_TAGS)}")
    if history_days < 30:
        raise ValueError("history_days must be at least 30")
    for name, share in (
        ("churn_fraction", churn_fraction),
        ("drift_fraction", drift_fraction),
        ("preference_fraction", preference_fraction),
        ("break_fraction", break_fraction),
    ):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be within 0..1")
    if now is None:
        now = datetime.now(UTC).replace(second=0, microsecond=0)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    rng = np.random.default_rng(seed)
    world = _World(rng, now, min(n_categories, n_items), history_days, seed)
    world.make_items(n_items)
    world.make_users(
        n_users,
        churn_fraction=churn_fraction,
        drift_fraction=drift_fraction,
        pref_fraction=preference_fraction,
        quiet_days=churn_quiet_days,
        break_fraction=break_fraction,
    )
    world.make_history(n_interactions)
    return world.result(seed)


class _World:
    """Generation state; times are float days relative to ``now`` (so all <= 0)."""

    def __init__(
        self, rng: np.random.Generator, now: datetime, n_cat: int, horizon: float, seed: int
    ) -> None:
        self.rng = rng
        self.seed_tag = str(seed)
        self.now = now
        self.horizon = horizon
        self.categories = tuple(list(CATEGORY_TAGS)[:n_cat])
        self.n_cat = n_cat
        share = rng.lognormal(0.0, 0.5, n_cat)
        self.category_share: FloatArray = share / share.sum()

    # -- catalogue ------------------------------------------------------------------------------

    def make_items(self, n_items: int) -> None:
        rng, n_cat = self.rng, self.n_cat
        primary = rng.choice(n_cat, n_items, p=self.category_share)
        primary[:n_cat] = np.arange(n_cat)  # every category has at least one item
        extra = rng.choice([0, 1, 2], n_items, p=[0.5, 0.35, 0.15])
        offsets = rng.choice([-2, -1, 1, 2], (n_items, 2))
        member = np.zeros((n_items, n_cat), dtype=bool)
        rows = np.arange(n_items)
        member[rows, primary] = True
        for k in range(2):
            has = extra > k
            member[rows[has], (primary[has] + offsets[has, k]) % n_cat] = True
        # Created uniformly over the past year; the oldest item predates all history.
        created = -rng.uniform(0.01, 365.0, n_items)
        created[int(np.argmin(created))] = -365.0
        # Zipf-like appeal: rank r gets 1/(r+1)^0.9, with some noise.
        rank = rng.permutation(n_items)
        appeal = (1.0 / (rank + 1.0) ** 0.9) * rng.lognormal(0.0, 0.2, n_items)
        formats = rng.choice(len(FORMATS), n_items, p=[0.4, 0.25, 0.15, 0.2])
        self.item_ids = [f"item-{i:05d}" for i in range(n_items)]
        self.item_member: BoolArray = member
        self.item_created: FloatArray = created
        self.item_format: IntArray = formats
        self.item_appeal: FloatArray = appeal
        self.oldest_in_category = np.array(
            [
                int(np.flatnonzero(member[:, c])[np.argmin(created[member[:, c]])])
                for c in range(n_cat)
            ]
        )
        self.oldest_item = int(np.argmin(created))
        # Per category: its items and the cumulative distribution of their appeal.
        self.category_items: list[IntArray] = []
        self.category_cdf: list[FloatArray] = []
        for c in range(n_cat):
            members = np.flatnonzero(member[:, c])
            cdf = np.cumsum(appeal[members])
            self.category_items.append(members)
            self.category_cdf.append(cdf / cdf[-1])
        n_tags = rng.choice([1, 2, 3], n_items, p=[0.3, 0.5, 0.2])
        n_common = rng.choice([0, 1, 2], n_items, p=[0.4, 0.45, 0.15])
        adjectives = rng.integers(0, len(_ADJECTIVES), n_items)
        forms = rng.integers(0, 5, n_items)
        tag_draws = rng.random((n_items, 3))
        common_draws = rng.integers(0, len(COMMON_TAGS), (n_items, 2))
        self.items: list[domain.Item] = []
        for i in range(n_items):
            cats = [self.categories[primary[i]]] + [
                self.categories[c] for c in np.flatnonzero(member[i]) if c != primary[i]
            ]
            pool = [t for c in cats for t in CATEGORY_TAGS[c]]
            picks = (tag_draws[i, : n_tags[i]] * len(pool)).astype(int)
            tags = [pool[p] for p in picks] + [
                COMMON_TAGS[c] for c in common_draws[i, : n_common[i]]
            ]
            fmt = FORMATS[formats[i]]
            label = cats[0].replace("-", " ").title()
            self.items.append(
                domain.Item(
                    item_id=self.item_ids[i],
                    title=f"{_ADJECTIVES[adjectives[i]]} {label} {_FORMS[fmt][forms[i]]}",
                    categories=tuple(cats),
                    tags=tuple(dict.fromkeys(tags)),
                    created_at=self._time(created[i]),
                    attributes={"format": fmt},
                )
            )

    # -- users ----------------------------------------------------------------------------------

    def make_users(
        self,
        n_users: int,
        *,
        churn_fraction: float,
        drift_fraction: float,
        pref_fraction: float,
        quiet_days: float,
        break_fraction: float,
    ) -> None:
        rng, n_cat, horizon = self.rng, self.n_cat, self.horizon
        self.user_ids = [f"user-{u:05d}" for u in range(n_users)]
        taste_cats = np.zeros((n_users, 4), dtype=np.int64)
        taste_w = np.zeros((n_users, 4))
        drift_cats = np.zeros((n_users, 4), dtype=np.int64)
        drift_w = np.zeros((n_users, 4))
        sizes = rng.choice([2, 3, 4], n_users, p=[0.35, 0.4, 0.25])
        centres = rng.choice(n_cat, n_users, p=self.category_share)
        for u in range(n_users):
            taste_cats[u], taste_w[u] = self._taste(int(centres[u]), int(sizes[u]))
        churner = np.zeros(n_users, dtype=bool)
        churner[rng.permutation(n_users)[: round(churn_fraction * n_users)]] = True
        drifter = np.zeros(n_users, dtype=bool)
        drifter[rng.permutation(n_users)[: round(drift_fraction * n_users)]] = True
        states = rng.random(n_users) < pref_fraction
        # Activity windows in days relative to now.
        start = np.where(
            rng.random(n_users) < 0.55,
            -horizon + rng.uniform(0.0, 5.0, n_users),
            rng.uniform(-horizon, -0.25 * horizon, n_users),
        )
        end = np.zeros(n_users)
        churn_start = rng.uniform(-horizon, -0.55 * horizon, n_users)
        start = np.where(churner, churn_start, start)
        # Churners go quiet at least `quiet` days before now (one churn horizon, by default),
        # some just before the latest cut-off a churn model is evaluated at, where recency alone
        # cannot tell them apart and the fading (fewer clicks, more dismissals) must.
        quiet = min(quiet_days, 0.3 * horizon)
        earliest_end = start + 0.2 * horizon
        churn_end = earliest_end + rng.random(n_users) * (-quiet - earliest_end)
        end = np.where(churner, churn_end, end)
        fade_len = np.minimum(0.25 * horizon, 0.6 * (end - start))
        fade_start = np.where(churner, end - fade_len, end)
        drift_at = np.where(
            drifter, start + rng.uniform(0.35, 0.65, n_users) * (end - start), np.inf
        )
        for u in np.flatnonzero(drifter).tolist():
            # Keep the main interest, move the rest to a new neighbourhood.
            new_centre = int(rng.choice(n_cat, p=self.category_share))
            cats, weights = self._taste(new_centre, int(sizes[u]))
            cats[0], weights = taste_cats[u, 0], np.sort(weights)[::-1]
            drift_cats[u], drift_w[u] = _dedupe_taste(cats, weights)
        drift_cats = np.where(drifter[:, None], drift_cats, taste_cats)
        drift_w = np.where(drifter[:, None], drift_w, taste_w)
        self.taste_cats, self.taste_w = taste_cats, taste_w
        self.drift_cats, self.drift_w = drift_cats, drift_w
        self.churner, self.drifter, self.states_preferences = churner, drifter, states
        # Some loyal users take a break of one to four weeks and come back: being idle for a
        # while is not the same as being gone, so recency alone cannot tell them from churners.
        takes_break = ~churner & (rng.random(n_users) < break_fraction) & (start < -60.0)
        break_len = np.where(takes_break, rng.uniform(7.0, 25.0, n_users), 0.0)
        # Where the break starts within the window with the break cut out (see _sample_times);
        # it ends at least two weeks before now, so the return shows in the history.
        break_at = start + rng.random(n_users) * (-break_len - 14.0 - start)
        self.break_len: FloatArray = break_len
        self.break_at: FloatArray = np.where(takes_break, break_at, np.inf)
        self.start, self.end, self.fade_start, self.drift_at = start, end, fade_start, drift_at
        self.intensity: FloatArray = np.clip(rng.lognormal(0.0, 0.4, n_users), 0.6, 3.0)
        self.user_platform: IntArray = rng.choice(3, n_users, p=_PLATFORM_SHARE)
        countries = rng.choice(len(_COUNTRIES), n_users, p=_COUNTRY_SHARE)
        ages = rng.choice(len(_AGE_BANDS), n_users, p=_AGE_SHARE)
        self.users = [
            domain.User(
                user_id=self.user_ids[u],
                attributes={
                    "country": _COUNTRIES[countries[u]],
                    "age_band": _AGE_BANDS[ages[u]],
                    "platform": _PLATFORMS[self.user_platform[u]],
                },
                preferences=self._stated_preferences(u) if states[u] else {},
            )
            for u in range(n_users)
        ]

    def _taste(self, centre: int, size: int) -> tuple[IntArray, FloatArray]:
        rng, n_cat = self.rng, self.n_cat
        cats = [centre]
        while len(cats) < min(size, n_cat):
            if rng.random() < 0.5:
                cand = (centre + int(rng.choice([-2, -1, 1, 2]))) % n_cat
            else:
                cand = int(rng.choice(n_cat, p=self.category_share))
            if cand not in cats:
                cats.append(cand)
        weights = np.sort(rng.dirichlet(np.full(len(cats), 1.5)))[::-1]
        return _dedupe_taste(np.array(cats, dtype=np.int64), weights)

    def _stated_preferences(self, u: int) -> dict[str, float]:
        weights = self.taste_w[u]
        top = weights.max()
        return {
            self.categories[c]: round(float(w / top), 2)
            for c, w in zip(self.taste_cats[u], weights, strict=True)
            if w > 0
        }

    # -- history --------------------------------------------------------------------------------

    def _activity_mass(self) -> FloatArray:
        steady = self.fade_start - self.start - self.break_len
        fading = (self.end - self.fade_start) / 2.0
        mass: FloatArray = self.intensity * (steady + fading)
        share: FloatArray = mass / mass.sum()
        return share

    def _allocate(self, total: int, minimum: int) -> IntArray:
        n_users = len(self.user_ids)
        minimum = min(minimum, total // n_users)
        counts: IntArray = minimum + self.rng.multinomial(
            total - minimum * n_users, self._activity_mass()
        )
        return counts

    def _sample_times(self, users: IntArray) -> FloatArray:
        """Times within each user's window: steady (minus any break), then a linear fade to zero
        (churners)."""
        rng = self.rng
        start, fade, end = self.start[users], self.fade_start[users], self.end[users]
        gap, gap_at = self.break_len[users], self.break_at[users]
        steady, fading = fade - gap - start, (end - fade) / 2.0
        in_steady = rng.random(users.size) * (steady + fading) < steady
        u = rng.random(users.size)
        times: FloatArray = np.where(
            in_steady, start + u * steady, fade + (end - fade) * (1.0 - np.sqrt(u))
        )
        # Sampled with the break cut out; everything after its start moves past it.
        times = np.where(in_steady & (times >= gap_at), times + gap, times)
        return np.minimum(times, 0.0)

    def _severity(self, users: IntArray, times: FloatArray) -> FloatArray:
        """0 while active; 0.3 rising to 1 as a churner's activity fades out."""
        fade, end = self.fade_start[users], self.end[users]
        span = np.maximum(end - fade, 1e-9)
        # Disengagement shows as soon as the fade starts (0.3), then deepens to the end.
        progress = (times - fade) / span
        severity: FloatArray = np.where(
            self.churner[users] & (progress >= 0.0), np.clip(0.3 + 0.7 * progress, 0.0, 1.0), 0.0
        )
        return severity

    def _current_taste(self, users: IntArray, times: FloatArray) -> tuple[IntArray, FloatArray]:
        drifted = times >= self.drift_at[users]
        cats = np.where(drifted[:, None], self.drift_cats[users], self.taste_cats[users])
        weights = np.where(drifted[:, None], self.drift_w[users], self.taste_w[users])
        return cats, weights

    def _pick_categories(self, users: IntArray, times: FloatArray, explore: FloatArray) -> IntArray:
        rng = self.rng
        cats, weights = self._current_taste(users, times)
        cum = np.cumsum(weights, axis=1)
        slot = np.minimum((cum < rng.random(users.size)[:, None] * cum[:, -1:]).sum(1), 3)
        in_taste = cats[np.arange(users.size), slot]
        wander = rng.choice(self.n_cat, users.size, p=self.category_share)
        picked: IntArray = np.where(rng.random(users.size) < explore, wander, in_taste)
        return picked

    def _pick_items(self, categories: IntArray, times: FloatArray) -> IntArray:
        """Appeal-weighted items of each category that exist at the time; fresh ones favoured."""
        rng = self.rng
        chosen = np.full(categories.size, -1, dtype=np.int64)
        pending = np.arange(categories.size)
        for _ in range(12):
            if pending.size == 0:
                break
            candidates = np.empty(pending.size, dtype=np.int64)
            cats = categories[pending]
            draws = rng.random(pending.size)
            for c in np.unique(cats):
                where = np.flatnonzero(cats == c)
                idx = np.searchsorted(self.category_cdf[c], draws[where], side="right")
                candidates[where] = self.category_items[c][
                    np.minimum(idx, self.category_items[c].size - 1)
                ]
            age = times[pending] - self.item_created[candidates]
            accept = (age >= 0) & (rng.random(pending.size) < 0.35 + 0.65 * np.exp(-age / 30.0))
            chosen[pending[accept]] = candidates[accept]
            pending = pending[~accept]
        if pending.size:
            fallback = self.oldest_in_category[categories[pending]]
            too_new = self.item_created[fallback] > times[pending]
            chosen[pending] = np.where(too_new, self.oldest_item, fallback)
        return chosen

    def _on_taste(self, users: IntArray, items: IntArray, times: FloatArray) -> BoolArray:
        cats, weights = self._current_taste(users, times)
        member = self.item_member[items[:, None], cats] & (weights > 0)
        on: BoolArray = np.asarray(member.any(axis=1), dtype=bool)
        return on

    def make_history(self, n_interactions: int) -> None:
        rng = self.rng
        n_users = len(self.user_ids)
        # Served lists first: their clicks are part of the interaction budget.
        per_user = self._allocate(max(1, n_interactions // 12), 0)
        imp_users = np.repeat(np.arange(n_users), per_user)
        imp_times = np.round(self._sample_times(imp_users) * DAY_SECONDS) / DAY_SECONDS
        order = np.lexsort((imp_users, imp_times))
        imp_users, imp_times = imp_users[order], imp_times[order]
        n_imp = imp_users.size
        slot_users = np.repeat(imp_users, LIST_LENGTH)
        slot_times = np.repeat(imp_times, LIST_LENGTH)
        severity = self._severity(slot_users, slot_times)
        # Half of each list follows the user's taste, half is what is popular overall.
        taste_half = np.tile(np.arange(LIST_LENGTH) < LIST_LENGTH // 2, n_imp)
        explore = np.where(taste_half, 0.1 + 0.3 * severity, 1.0)
        shown = self._pick_items(self._pick_categories(slot_users, slot_times, explore), slot_times)
        grid = shown.reshape(n_imp, LIST_LENGTH)
        repeated = np.zeros_like(grid, dtype=bool)
        for k in range(1, LIST_LENGTH):
            repeated[:, k] = (grid[:, :k] == grid[:, k : k + 1]).any(axis=1)
        on = self._on_taste(slot_users, shown, slot_times)
        p_click = np.where(on, 0.16 * (1.0 - 0.75 * severity), 0.02)
        p_dismiss = np.where(on, 0.01 + 0.04 * severity, 0.05 + 0.3 * severity)
        draw = rng.random(shown.size)
        clicked = (draw < p_click) & ~repeated.ravel()
        dismissed = (draw >= p_click) & (draw < p_click + p_dismiss) & ~repeated.ravel()
        reaction = slot_times + rng.uniform(10.0, 600.0, shown.size) / DAY_SECONDS
        reaction = np.minimum(np.round(reaction * DAY_SECONDS) / DAY_SECONDS, 0.0)
        self.recset_ids = [
            str(uuid.uuid5(DEMO_NAMESPACE, f"{self.seed_tag}-{j}")) for j in range(n_imp)
        ]
        self.impressions = [
            DemoImpression(
                recset_id=self.recset_ids[j],
                user_id=self.user_ids[imp_users[j]],
                item_ids=tuple(self.item_ids[i] for i in dict.fromkeys(grid[j].tolist())),
                served_at=self._time(imp_times[j]),
            )
            for j in range(n_imp)
        ]
        reacted = np.flatnonzero(clicked | dismissed)
        reaction_times = self._times(reaction[reacted])
        self.feedback = [
            DemoFeedback(
                domain.Feedback(
                    user_id=self.user_ids[slot_users[s]],
                    item_id=self.item_ids[shown[s]],
                    recset_id=self.recset_ids[s // LIST_LENGTH],
                    clicked=bool(clicked[s]),
                    dismissed=bool(dismissed[s]),
                    feedback_id=str(uuid.uuid5(DEMO_NAMESPACE, f"{self.seed_tag}-feedback-{s}")),
                ),
                created_at=when,
            )
            for s, when in zip(reacted.tolist(), reaction_times, strict=True)
        ]
        clicks = np.flatnonzero(clicked)
        # Organic events: each user's share follows their activity; at least a few each.
        n_organic = max(0, n_interactions - clicks.size)
        counts = self._allocate(n_organic, 3)
        users = np.repeat(np.arange(n_users), counts)
        times = np.round(self._sample_times(users) * DAY_SECONDS) / DAY_SECONDS
        severity = self._severity(users, times)
        explore = 0.12 + 0.3 * severity
        items = self._pick_items(self._pick_categories(users, times, explore), times)
        on = self._on_taste(users, items, times)
        profile = np.where(severity > 0.0, 2, np.where(on, 0, 1))
        cum = np.cumsum(_TYPE_MIX, axis=1)[profile]
        kinds = np.minimum((cum < rng.random(users.size)[:, None] * cum[:, -1:]).sum(1), 7)
        ratings = np.where(
            on,
            rng.choice(_ON_TASTE_RATINGS[0], users.size, p=_ON_TASTE_RATINGS[1]),
            rng.choice(_OFF_TASTE_RATINGS[0], users.size, p=_OFF_TASTE_RATINGS[1]),
        )
        values = np.where(kinds == _TYPES.index(domain.InteractionType.RATING), ratings, 0.0)
        # Clicks on served lists join the organic events, attributed to their list.
        all_users = np.concatenate([users, slot_users[clicks]])
        all_items = np.concatenate([items, shown[clicks]])
        all_times = np.concatenate([times, reaction[clicks]])
        all_kinds = np.concatenate([kinds, np.full(clicks.size, 1)])
        all_values = np.concatenate([values, np.zeros(clicks.size)])
        all_recsets = np.concatenate([np.full(users.size, -1), clicks // LIST_LENGTH])
        other_platform = rng.integers(0, 3, all_users.size)
        platform = np.where(
            rng.random(all_users.size) < 0.85, self.user_platform[all_users], other_platform
        )
        order = np.lexsort((all_items, all_users, all_times))
        when = self._times(all_times[order])
        self.interactions = [
            domain.Interaction(
                event_id=f"demo-{self.seed_tag}-{n:07d}",
                user_id=self.user_ids[u],
                item_id=self.item_ids[i],
                type=_TYPES[k],
                occurred_at=t,
                value=v,
                content_type=FORMATS[self.item_format[i]],
                platform=_PLATFORMS[p],
                recset_id=self.recset_ids[r] if r >= 0 else "",
            )
            for n, (u, i, k, v, p, r, t) in enumerate(
                zip(
                    all_users[order].tolist(),
                    all_items[order].tolist(),
                    all_kinds[order].tolist(),
                    all_values[order].tolist(),
                    platform[order].tolist(),
                    all_recsets[order].tolist(),
                    when,
                    strict=True,
                )
            )
        ]

    # -- output ---------------------------------------------------------------------------------

    def _time(self, days: float) -> datetime:
        return self.now + timedelta(seconds=round(float(days) * DAY_SECONDS))

    def _times(self, days: FloatArray) -> list[datetime]:
        base = np.datetime64(self.now.replace(tzinfo=None), "s")
        stamps = base + np.round(days * DAY_SECONDS).astype("timedelta64[s]")
        return [t.replace(tzinfo=UTC) for t in stamps.astype(datetime).tolist()]

    def _break_start(self, u: int) -> datetime | None:
        if not np.isfinite(self.break_at[u]):
            return None
        return self._time(self.break_at[u])

    def result(self, seed: int) -> DemoData:
        def taste(cats: IntArray, weights: FloatArray) -> dict[str, float]:
            return {
                self.categories[c]: float(w) for c, w in zip(cats, weights, strict=True) if w > 0
            }

        profiles = {
            uid: UserProfile(
                user_id=uid,
                taste=taste(self.drift_cats[u], self.drift_w[u]),
                initial_taste=taste(self.taste_cats[u], self.taste_w[u]),
                drift_at=self._time(self.drift_at[u]) if self.drifter[u] else None,
                churner=bool(self.churner[u]),
                active_from=self._time(self.start[u]),
                active_until=self._time(self.end[u]),
                fade_from=self._time(self.fade_start[u]) if self.churner[u] else None,
                states_preferences=bool(self.states_preferences[u]),
                break_from=self._break_start(u),
                break_days=float(self.break_len[u]),
            )
            for u, uid in enumerate(self.user_ids)
        }
        return DemoData(
            seed=seed,
            now=self.now,
            history_days=self.horizon,
            categories=self.categories,
            items=self.items,
            users=self.users,
            interactions=self.interactions,
            impressions=self.impressions,
            feedback=self.feedback,
            profiles=profiles,
        )


def _dedupe_taste(cats: IntArray, weights: FloatArray) -> tuple[IntArray, FloatArray]:
    """Pad a taste to 4 slots (weight 0), merging repeated categories."""
    merged: dict[int, float] = {}
    for c, w in zip(cats.tolist(), weights.tolist(), strict=True):
        merged[c] = merged.get(c, 0.0) + w
    out_c = np.zeros(4, dtype=np.int64)
    out_w = np.zeros(4)
    for k, (c, w) in enumerate(list(merged.items())[:4]):
        out_c[k], out_w[k] = c, w
    out_w /= out_w.sum()
    return out_c, out_w


def write_demo(db: Database, data: DemoData, now: datetime | None = None) -> DemoWriteReport:
    """Load ``data`` into ``db`` in one transaction; re-running with the same data adds nothing.

    Items and users are upserted (demo users' preferences replaced), interactions and impressions
    are keyed by their seed-derived ids, and feedback is written only with its new impression.
    """
    written_at = now or datetime.now(UTC)
    with db.writer() as session:
        bulk.upsert_items(session, data.items, written_at)
        bulk.upsert_users(session, data.users, written_at)
        user_ids = [u.user_id for u in data.users]
        for start in range(0, len(user_ids), bulk.CHUNK_ROWS):
            chunk = user_ids[start : start + bulk.CHUNK_ROWS]
            session.execute(delete(m.Preference).where(m.Preference.user_id.in_(chunk)))
        preferences = [
            (u.user_id, category, score)
            for u in data.users
            for category, score in u.preferences.items()
        ]
        bulk.upsert_preferences(session, preferences)
        stored = bulk.stored_keys(
            session, m.Impression, "recset_id", (imp.recset_id for imp in data.impressions)
        )
        new_impressions = bulk.insert_impressions(
            session,
            [
                {
                    "recset_id": imp.recset_id,
                    "user_id": imp.user_id,
                    "algorithm": imp.algorithm.value,
                    "model_version": "",
                    "fallback_reason": "",
                    "item_ids": list(imp.item_ids),
                    "platform": "",
                    "served_at": imp.served_at,
                }
                for imp in data.impressions
            ],
        )
        new_interactions = bulk.insert_interactions(session, data.interactions, written_at)
        new_feedback = bulk.insert_feedback(
            session,
            [
                (f.feedback, f.created_at)
                for f in data.feedback
                if f.feedback.recset_id not in stored
            ],
        )
    return DemoWriteReport(
        items=len(data.items),
        users=len(data.users),
        preferences=len(preferences),
        interactions=len(data.interactions),
        new_interactions=new_interactions,
        impressions=len(data.impressions),
        new_impressions=new_impressions,
        new_feedback=new_feedback,
    )
