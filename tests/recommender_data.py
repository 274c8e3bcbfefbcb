"""Small deterministic taste data for recommender tests: users like a few categories and
mostly interact with items of those categories, more often with popular ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from recgrpc import domain
from recgrpc.db import Database, queries

EPOCH = datetime(2021, 3, 1, tzinfo=UTC)
T0 = datetime(2019, 5, 1, tzinfo=UTC)  # years ago: decay must not depend on the wall clock


@dataclass(frozen=True)
class TasteData:
    items: list[domain.Item]
    users: list[domain.User]
    events: list[domain.Interaction]
    taste: dict[str, tuple[str, ...]]
    """user_id -> favourite categories"""


def taste_data(
    n_users: int = 120,
    n_items: int = 80,
    n_categories: int = 6,
    events_per_user: int = 20,
    seed: int = 7,
    with_preferences: bool = True,
    start: datetime = EPOCH,
) -> TasteData:
    rng = np.random.default_rng(seed)
    categories = [f"c{c}" for c in range(n_categories)]
    item_cat = [categories[i % n_categories] for i in range(n_items)]
    items = [
        domain.Item(
            item_id=f"i{i:03d}",
            title=f"item {i}",
            categories=[item_cat[i]],
            tags=[f"{item_cat[i]}-t{i % 3}"],
            created_at=start - timedelta(days=200 - i),
        )
        for i in range(n_items)
    ]
    popularity = rng.pareto(1.5, n_items) + 1.0
    by_cat = {c: [i for i in range(n_items) if item_cat[i] == c] for c in categories}
    users: list[domain.User] = []
    events: list[domain.Interaction] = []
    taste: dict[str, tuple[str, ...]] = {}
    kinds = [domain.InteractionType.VIEW, domain.InteractionType.CLICK, domain.InteractionType.LIKE]
    for u in range(n_users):
        uid = f"u{u:03d}"
        liked = tuple(rng.choice(categories, size=2, replace=False).tolist())
        taste[uid] = liked
        prefs = {liked[0]: 1.0, liked[1]: 0.6} if with_preferences else {}
        users.append(domain.User(user_id=uid, attributes={"tier": f"t{u % 3}"}, preferences=prefs))
        pool = by_cat[liked[0]] + by_cat[liked[1]]
        weights = popularity[pool] / popularity[pool].sum()
        n_events = int(rng.integers(events_per_user // 2, events_per_user * 3 // 2 + 1))
        chosen = rng.choice(pool, size=n_events, p=weights)
        times = np.sort(rng.uniform(0, 90, size=n_events))
        for n, (liked_item, day) in enumerate(zip(chosen, times, strict=True)):
            noise = rng.random() < 0.15  # some events outside the taste
            item = int(rng.integers(n_items)) if noise else int(liked_item)
            events.append(
                domain.Interaction(
                    event_id=f"{uid}-e{n}",
                    user_id=uid,
                    item_id=f"i{int(item):03d}",
                    type=kinds[int(rng.integers(3))],
                    occurred_at=start + timedelta(days=float(day)),
                )
            )
    return TasteData(items=items, users=users, events=events, taste=taste)


def load(db: Database, data: TasteData, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    with db.writer() as session:
        queries.upsert_items(session, data.items, now)
        queries.upsert_users(session, data.users, now)
        queries.insert_interactions(session, data.events, now)
