"""A demo world's history: organic events, served lists with feedback, planted churn."""

from __future__ import annotations

import uuid
from datetime import datetime

import numpy as np

from recgrpc import domain
from recgrpc.jobs.demo_data import (
    DAY_SECONDS,
    DEMO_NAMESPACE,
    FORMATS,
    LIST_LENGTH,
    OFF_TASTE_RATINGS,
    ON_TASTE_RATINGS,
    PLATFORMS,
    TYPE_MIX,
    TYPES,
    DemoData,
    DemoFeedback,
    DemoImpression,
    FloatArray,
    IntArray,
    UserProfile,
)
from recgrpc.jobs.demo_world import WorldSetup


class DemoWorld(WorldSetup):
    """A world set up by ``WorldSetup`` plus its history, turned into ``DemoData``."""

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
        cum = np.cumsum(TYPE_MIX, axis=1)[profile]
        kinds = np.minimum((cum < rng.random(users.size)[:, None] * cum[:, -1:]).sum(1), 7)
        ratings = np.where(
            on,
            rng.choice(ON_TASTE_RATINGS[0], users.size, p=ON_TASTE_RATINGS[1]),
            rng.choice(OFF_TASTE_RATINGS[0], users.size, p=OFF_TASTE_RATINGS[1]),
        )
        values = np.where(kinds == TYPES.index(domain.InteractionType.RATING), ratings, 0.0)
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
                type=TYPES[k],
                occurred_at=t,
                value=v,
                content_type=FORMATS[self.item_format[i]],
                platform=PLATFORMS[p],
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
