"""The project's generated demo world as a ranking-quality split (see bench/quality.py).

The whole history of ``recgrpc.demo`` (deterministic by seed) goes through the same per-user
temporal split as a public data set: the first 80% of each user's events are imported with
their real types, and the test positives are explicit signs of liking in the remaining 20%.
"""

from __future__ import annotations

from quality_data import Split, split_events

from recgrpc.jobs.demo import generate_demo


def demo_split(seed: int, users: int, items: int, interactions: int) -> Split:
    data = generate_demo(seed=seed, n_users=users, n_items=items, n_interactions=interactions)
    catalogue = [(i.item_id, i.title, "|".join(i.categories)) for i in data.items]
    by_user: dict[str, list[tuple[int, str, str, float]]] = {}
    for event in data.interactions:
        by_user.setdefault(event.user_id, []).append(
            (int(event.occurred_at.timestamp()), event.item_id, event.type.value, event.value)
        )
    return split_events(catalogue, by_user)
