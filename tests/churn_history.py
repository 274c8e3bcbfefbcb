"""Synthetic user histories with planted churners, for the churn tests (small and deterministic).

Loyal users act at a steady daily rate. A planted churner's activity fades over the weeks before
their churn day (fewer events, fewer clicks, more dismissals) and stops after it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import insert

from recgrpc import domain
from recgrpc.db import Database, queries
from recgrpc.db import models as m


@dataclass
class History:
    end: datetime
    churn_day: dict[str, datetime] = field(default_factory=dict)
    """Planted churners and the day they stopped; loyal users are absent."""
    loyal: set[str] = field(default_factory=set)


def generate(
    db: Database,
    end: datetime,
    *,
    users: int = 120,
    days: int = 150,
    churner_share: float = 0.4,
    seed: int = 7,
) -> History:
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    items = [domain.Item(item_id=f"i{n}", categories=[f"c{n % 5}"]) for n in range(30)]
    history = History(end=end)
    events: list[domain.Interaction] = []
    feedback: list[dict[str, object]] = []
    impressions: list[dict[str, object]] = []
    prefs: list[domain.User] = []
    for n in range(users):
        user_id = f"u{n:03d}"
        joined = start + timedelta(days=rng.uniform(0, days * 0.4))
        rate = rng.uniform(0.4, 1.2)  # events per day at full engagement
        stop = None
        if rng.random() < churner_share:
            stop = joined + timedelta(days=rng.uniform(25, (end - joined).days + 20))
            history.churn_day[user_id] = stop
        else:
            history.loyal.add(user_id)
        prefs.append(domain.User(user_id, preferences={f"c{k}": 1.0 for k in range(n % 4)}))
        day = joined
        while day < end:
            engagement = 1.0
            if stop is not None:
                if day >= stop:
                    break
                # Fades over the 35 days before the churn day.
                engagement = min(1.0, max(0.1, (stop - day).days / 35))
            for _ in range(_poisson(rng, rate * engagement)):
                at = day + timedelta(seconds=rng.uniform(0, 86_400))
                if at >= end:
                    continue
                item = rng.choice(items).item_id
                kind = rng.choice([domain.InteractionType.VIEW, domain.InteractionType.CLICK])
                events.append(
                    domain.Interaction(
                        event_id=f"{user_id}-{len(events)}",
                        user_id=user_id,
                        item_id=item,
                        type=kind,
                        occurred_at=at,
                    )
                )
                if rng.random() < 0.4:
                    recset = f"r{len(impressions)}"
                    impressions.append(
                        {
                            "recset_id": recset,
                            "user_id": user_id,
                            "algorithm": "HYBRID",
                            "item_ids": [item],
                            "served_at": at,
                        }
                    )
                    clicked = rng.random() < 0.2 + 0.4 * engagement
                    dismissed = not clicked and rng.random() < 0.7 - 0.5 * engagement
                    feedback.append(
                        {
                            "recset_id": recset,
                            "user_id": user_id,
                            "item_id": item,
                            "clicked": clicked,
                            "dismissed": dismissed,
                            "rating": round(1 + 4 * engagement) if rng.random() < 0.3 else None,
                            "created_at": at,
                        }
                    )
            day += timedelta(days=1)
    with db.writer() as session:
        queries.upsert_items(session, items, start)
        queries.upsert_users(session, prefs, start)
        queries.insert_interactions(session, events, end)
        for chunk_start in range(0, len(impressions), 500):
            session.execute(insert(m.Impression), impressions[chunk_start : chunk_start + 500])
        for chunk_start in range(0, len(feedback), 500):
            session.execute(insert(m.Feedback), feedback[chunk_start : chunk_start + 500])
    return history


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method; means here are small.
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
