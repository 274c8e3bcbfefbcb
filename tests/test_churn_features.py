"""Churn features and labels as of a time, on hand-built histories (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import insert

from recgrpc import domain
from recgrpc.db import Database, queries
from recgrpc.db import models as m
from recgrpc.jobs.churn_scoring import churn_features
from recgrpc.jobs.churn_training import churn_labels, train_churn
from recgrpc.model.churn_features import FEATURE_NAMES
from tests import churn_history

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def _events(db: Database, times: dict[str, list[datetime]]) -> None:
    items = [domain.Item(item_id="i1", categories=["news"])]
    events = [
        domain.Interaction(
            event_id=f"{user}-{n}",
            user_id=user,
            item_id="i1",
            type=domain.InteractionType.VIEW,
            occurred_at=at,
        )
        for user, stamps in times.items()
        for n, at in enumerate(stamps)
    ]
    with db.writer() as session:
        queries.upsert_items(session, items, AS_OF - 200 * DAY)
        queries.insert_interactions(session, events, AS_OF)


HISTORY = {
    # active before and inside the window: retained
    "alice": [AS_OF - 40 * DAY, AS_OF - 10 * DAY, AS_OF - 2 * DAY, AS_OF - 2 * DAY + HOUR,
              AS_OF - HOUR, AS_OF + 5 * DAY],
    # silent after the cut-off: churned
    "bob": [AS_OF - 100 * DAY, AS_OF - 60 * DAY],
    # back exactly at the end of the window: retained (the window is closed on the right)
    "carol": [AS_OF - 5 * DAY, AS_OF + 30 * DAY],
    # back one second too late: churned
    "dave": [AS_OF - 3 * DAY, AS_OF + 30 * DAY + timedelta(seconds=1)],
    # only after the cut-off: not part of the population
    "erin": [AS_OF + DAY],
    # last seen exactly at the cut-off: counts as history, churned
    "frank": [AS_OF],
}  # fmt: skip


def test_labels_at_a_cutoff(database: Database) -> None:
    _events(database, HISTORY)
    with database.reader() as session:
        table = churn_features(session, AS_OF)
        labels = churn_labels(session, table.user_ids, AS_OF, horizon_days=30)
    assert dict(zip(table.user_ids, labels.tolist(), strict=True)) == {
        "alice": 0,
        "bob": 1,
        "carol": 0,
        "dave": 1,
        "frank": 1,
    }


def test_feature_values_for_a_known_user(database: Database) -> None:
    _events(database, HISTORY)
    with database.writer() as session:
        queries.upsert_users(
            session, [domain.User("alice", preferences={"news": 1.0, "sport": 0.5})], AS_OF
        )
        feedback = [
            (AS_OF - 3 * DAY, True, False, None),
            (AS_OF - 4 * DAY, False, True, 4.0),
            (AS_OF - 60 * DAY, False, False, 2.0),  # in the 90-day window only
            (AS_OF + DAY, True, False, 1.0),  # after the cut-off: invisible
        ]
        for at, clicked, dismissed, rating in feedback:
            queries.record_feedback(
                session, domain.Feedback("alice", "i1", "r", clicked, dismissed, rating), at
            )
        session.execute(
            insert(m.Impression),
            [
                {"recset_id": f"r{n}", "user_id": "alice", "algorithm": "HYBRID",
                 "item_ids": ["i1"], "served_at": at}
                for n, at in enumerate(
                    [AS_OF - DAY, AS_OF - 5 * DAY, AS_OF - 20 * DAY, AS_OF - 45 * DAY]
                )
            ],
        )  # fmt: skip

    with database.reader() as session:
        table = churn_features(session, AS_OF, ["alice", "bob"])
    alice = dict(zip(FEATURE_NAMES, table.row("alice").tolist(), strict=True))
    assert alice["days_since_last_event"] == pytest.approx(1 / 24)
    assert alice["tenure_days"] == pytest.approx(40)
    # silent an hour against a usual gap of 40 days / 5 events
    assert alice["silence_vs_usual_gap"] == pytest.approx(math.log((1 / 24 + 1) / (8 + 1)))
    assert (alice["events_7d"], alice["events_30d"], alice["events_90d"]) == (3, 4, 5)
    # 3 events in the last week against 1 in the three weeks before (1/3 a week)
    assert alice["trend_7d_vs_prev_3w"] == pytest.approx(math.log(4 / (1 / 3 + 1)))
    # 4 events in 30 days against 1 in the 60 days before (0.5 a month)
    assert alice["trend_30d_vs_prev_60d"] == pytest.approx(math.log(5 / 1.5))
    assert alice["active_days_30d"] == 3  # two events on one day count once
    assert alice["impressions_30d"] == 3
    assert alice["feedback_30d"] == 2
    assert alice["click_through_rate_30d"] == pytest.approx(1 / 3)
    assert alice["dismiss_rate_30d"] == pytest.approx(1 / 2)
    assert alice["mean_rating_90d"] == pytest.approx(3.0)
    assert alice["preferences"] == 2

    bob = dict(zip(FEATURE_NAMES, table.row("bob").tolist(), strict=True))
    assert bob["days_since_last_event"] == pytest.approx(60)
    assert bob["events_90d"] == 1
    assert bob["events_30d"] == 0
    # no exposure and no ratings: undefined, not zero
    assert math.isnan(bob["click_through_rate_30d"])
    assert math.isnan(bob["dismiss_rate_30d"])
    assert math.isnan(bob["mean_rating_90d"])


def test_users_without_history_by_then_are_absent(database: Database) -> None:
    _events(database, HISTORY)
    with database.reader() as session:
        assert churn_features(session, AS_OF, ["erin"]).user_ids == ()
        assert churn_features(session, AS_OF, ["nobody"]).user_ids == ()
        assert churn_features(session, AS_OF + 2 * DAY, ["erin"]).user_ids == ("erin",)


def test_batch_features_equal_single_user_features(database: Database) -> None:
    """Training (every user at once) and serving (one user) compute the same numbers."""
    end = datetime(2026, 6, 1, tzinfo=UTC)
    churn_history.generate(database, end, users=30, days=120)
    with database.reader() as session:
        for as_of in (end - 70 * DAY, end - 30 * DAY + 7 * HOUR, end):
            batch = churn_features(session, as_of)
            assert len(batch.user_ids) >= 10
            for user_id in batch.user_ids:
                single = churn_features(session, as_of, [user_id])
                assert single.user_ids == (user_id,)
                np.testing.assert_array_equal(single.values[0], batch.row(user_id))


def test_too_short_a_history_is_refused(database: Database) -> None:
    _events(database, HISTORY)
    # The history starts 100 days before AS_OF: 60 days before AS_OF - 40 days is too little
    # for a training cut-off whose label window closes before the evaluation cut-off.
    with pytest.raises(ValueError, match="not enough history"):
        train_churn(database, as_of=AS_OF - 40 * DAY, horizon_days=30)
    with pytest.raises(ValueError, match="not enough history"):
        train_churn(database, as_of=AS_OF - 80 * DAY, horizon_days=30)
