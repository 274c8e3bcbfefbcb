"""The demo world: ``generate_demo`` makes it deterministically, ``write_demo`` stores it.

See ``demo_data`` for what is planted; ``demo_world`` and ``demo_history`` generate it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from sqlalchemy import delete

from recgrpc.db import bulk
from recgrpc.db import models as m
from recgrpc.db.engine import Database
from recgrpc.domain import utcnow
from recgrpc.jobs.demo_data import (
    CATEGORY_TAGS,
    DemoData,
    DemoWriteReport,
)
from recgrpc.jobs.demo_history import DemoWorld

__all__ = ["DemoData", "DemoWriteReport", "generate_demo", "write_demo"]


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
    world = DemoWorld(rng, now, min(n_categories, n_items), history_days, seed)
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


def write_demo(db: Database, data: DemoData, now: datetime | None = None) -> DemoWriteReport:
    """Load ``data`` into ``db`` in one transaction; re-running with the same data adds nothing.

    Items and users are upserted (demo users' preferences replaced), interactions and impressions
    are keyed by their seed-derived ids, and feedback is written only with its new impression.
    """
    written_at = now or utcnow()
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
