"""A demo world's set-up: the catalogue and the users with their tastes (``demo_history``
adds the events). Times are float days relative to ``now`` (so all <= 0)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from recgrpc import domain
from recgrpc.jobs.demo_data import (
    ADJECTIVES,
    AGE_BANDS,
    AGE_SHARE,
    CATEGORY_TAGS,
    COMMON_TAGS,
    COUNTRIES,
    COUNTRY_SHARE,
    DAY_SECONDS,
    FORMATS,
    FORMS,
    PLATFORM_SHARE,
    PLATFORMS,
    BoolArray,
    FloatArray,
    IntArray,
)
from recgrpc.jobs.demo_rhythm import Window, activity_grid


class WorldSetup:
    """Generation state for the catalogue and the users; ``DemoWorld`` adds the history."""

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
        adjectives = rng.integers(0, len(ADJECTIVES), n_items)
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
                    title=f"{ADJECTIVES[adjectives[i]]} {label} {FORMS[fmt][forms[i]]}",
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
        abrupt_fraction: float = 0.3,
        sessions_fraction: float = 0.5,
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
        self.user_platform: IntArray = rng.choice(3, n_users, p=PLATFORM_SHARE)
        countries = rng.choice(len(COUNTRIES), n_users, p=COUNTRY_SHARE)
        ages = rng.choice(len(AGE_BANDS), n_users, p=AGE_SHARE)
        # Drawn last so the tastes and windows above stay those of earlier versions' seeds.
        # Some churners stop after steady activity, with no fade to warn of it.
        abrupt = churner & (rng.random(n_users) < abrupt_fraction)
        self.fade_start = np.where(abrupt, end, fade_start)
        # Some users who stay visit only in sessions ten days to six weeks apart: long silences
        # that end in a return.
        in_sessions = ~churner & (rng.random(n_users) < sessions_fraction)
        self.session_gap: FloatArray = np.where(in_sessions, rng.uniform(10.0, 40.0, n_users), 0.0)
        self.grid = activity_grid(rng, self.now, horizon, self._window())
        self.users = [
            domain.User(
                user_id=self.user_ids[u],
                attributes={
                    "country": COUNTRIES[countries[u]],
                    "age_band": AGE_BANDS[ages[u]],
                    "platform": PLATFORMS[self.user_platform[u]],
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
        mass: FloatArray = self.intensity * self.grid.mass
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
        """Times drawn by each user's daily activity (see ``demo_rhythm``)."""
        return self.grid.sample(self.rng, users, self._window())

    def _window(self) -> Window:
        return Window(
            start=self.start,
            end=self.end,
            fade_start=self.fade_start,
            break_at=self.break_at,
            break_len=self.break_len,
            session_gap=self.session_gap,
        )

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

    # -- output ---------------------------------------------------------------------------------

    def _time(self, days: float) -> datetime:
        return self.now + timedelta(seconds=round(float(days) * DAY_SECONDS))

    def _times(self, days: FloatArray) -> list[datetime]:
        base = np.datetime64(self.now.replace(tzinfo=None), "s")
        stamps = base + np.round(days * DAY_SECONDS).astype("timedelta64[s]")
        return [t.replace(tzinfo=UTC) for t in stamps.astype(datetime).tolist()]


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
