"""The hot path's prepared statements store and read exactly what SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from recgrpc import domain
from recgrpc.db import Database, queries
from recgrpc.db import models as m
from recgrpc.db import training_data as td
from recgrpc.db.prepared import Prepared

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _event(event_id: str, at: datetime, **fields: object) -> domain.Interaction:
    values: dict[str, object] = {
        "user_id": "u1",
        "item_id": "i1",
        "type": domain.InteractionType.RATING,
        "value": 4.5,
        **fields,
    }
    return domain.Interaction(event_id=event_id, occurred_at=at, **values)  # type: ignore[arg-type]


def test_an_interaction_round_trips_through_prepared_and_orm_alike(database: Database) -> None:
    with database.writer() as session:
        queries.upsert_items(session, [domain.Item("i1", categories=("c",))], NOW)
    # A zone other than UTC and a whole second: both are where text formats could drift.
    at = datetime(2026, 2, 28, 14, 30, 0, tzinfo=timezone(timedelta(hours=2)))
    event = _event("e1", at, metadata={"k": "v", "ü": "ß"}, platform="ios")
    with database.writer() as session:
        assert queries.insert_new_interactions(session, [event, _event("e2", NOW)], NOW) == {
            "e1",
            "e2",
        }
    with database.writer() as session:  # stored before: nothing new
        assert queries.insert_new_interactions(session, [event], NOW) == set()

    with database.reader() as session:
        row = session.scalars(select(m.Interaction).where(m.Interaction.event_id == "e1")).one()
        # A range filter compiled by SQLAlchemy finds it: the stored form is the one it writes.
        in_range = session.scalars(
            select(m.Interaction.event_id).where(
                m.Interaction.occurred_at >= at - timedelta(microseconds=1),
                m.Interaction.occurred_at < at + timedelta(microseconds=1),
            )
        ).all()
    assert row.occurred_at == at
    assert row.occurred_at.tzinfo is not None
    assert row.event_metadata == {"k": "v", "ü": "ß"}
    assert row.platform == "ios"
    assert row.received_at == NOW
    assert in_range == ["e1"]

    with database.connection() as conn:
        context = queries.load_user_context(conn, "u1")
    assert context.known
    assert context.seen_item_ids == {"i1"}
    assert [r.occurred_at for r in context.recent] == [NOW, at]  # newest first
    assert all(r.occurred_at.utcoffset() == timedelta(0) for r in context.recent)
    assert context.recent[0].value == 4.5
    assert context.recent[0].type is domain.InteractionType.RATING


def _training_top_n(database: Database, user_id: str, item_ids: list[str]) -> None:
    with database.writer() as session:
        td.replace_top_n(
            session,
            user_ids=[user_id],
            item_ids=item_ids,
            top_items=np.arange(len(item_ids), dtype=np.int64)[None, :],
            top_scores=np.linspace(1.0, 0.5, len(item_ids), dtype=np.float32)[None, :],
            algorithm="HYBRID",
            model_version="v0",
            generated_at=NOW,
        )


def _stored(database: Database, user_id: str) -> list[tuple[str, int, bool, bool]]:
    with database.reader() as session:
        rows = session.scalars(
            select(m.Recommendation)
            .where(m.Recommendation.user_id == user_id)
            .order_by(m.Recommendation.rank)
        ).all()
    return [(r.item_id, r.rank, r.is_clicked, r.is_dismissed) for r in rows]


def test_a_served_list_is_stored_as_an_impression_and_leaves_the_top_n(
    database: Database,
) -> None:
    _training_top_n(database, "u1", ["t0", "t1"])
    ranking = domain.RecommendationList(
        items=[domain.ScoredItem(f"i{k}", 1.0 - k / 10, "collaborative") for k in range(3)],
        algorithm=domain.Algorithm.HYBRID,
        model_version="v1",
        fallback_reason="",
    )
    first = domain.ServedList(recset_id="r1", generated_at=NOW, ranking=ranking)
    second = domain.ServedList(recset_id="r2", generated_at=NOW, ranking=ranking)
    with database.writer() as session:
        queries.record_impressions(session, [("u1", first, "web"), ("u1", second, "web")])
    with database.reader() as session:
        impressions = session.scalars(select(m.Impression).order_by(m.Impression.recset_id)).all()
    assert [(i.recset_id, i.item_ids, i.served_at, i.model_version) for i in impressions] == [
        ("r1", ["i0", "i1", "i2"], NOW, "v1"),
        ("r2", ["i0", "i1", "i2"], NOW, "v1"),
    ]
    # The stored top-N is the training job's: serving does not rewrite it.
    assert _stored(database, "u1") == [("t0", 1, False, False), ("t1", 2, False, False)]


def test_the_user_context_holds_everything_ranking_reads(database: Database) -> None:
    # PostgreSQL reads it in one statement, SQLite in four: both must give the same context.
    user = domain.User("u1", attributes={"plan": "pro"}, preferences={"jazz": 0.75, "rock": 0.1})
    with database.writer() as session:
        queries.upsert_items(session, [domain.Item(f"i{k}") for k in range(4)], NOW)
        queries.upsert_users(session, [user, domain.User("u2")], NOW)
    first = datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC)
    events = [
        _event("e1", first),
        _event("e2", NOW, item_id="i2", type=domain.InteractionType.CLICK, value=0.0),
        _event("e3", NOW - timedelta(hours=1), item_id="i3"),
    ]
    with database.transaction() as conn:
        queries.insert_new_interactions(conn, events, NOW)
        queries.record_feedback_batch(
            conn,
            [
                domain.Feedback("u1", "i3", "", clicked=False, dismissed=True),
                domain.Feedback("u1", "i3", "", clicked=False, dismissed=True),
                domain.Feedback("u1", "i2", "", clicked=True, dismissed=False),
            ],
            NOW,
        )

    with database.connection() as conn:
        context = queries.load_user_context(conn, "u1", recent_limit=2)
        bare = queries.load_user_context(conn, "u2")
        unknown = queries.load_user_context(conn, "nobody")

    assert context.known
    assert context.attributes == {"plan": "pro"}
    assert context.preferences == {"jazz": 0.75, "rock": 0.1}
    assert context.seen_item_ids == {"i1", "i2", "i3"}
    assert context.dismissed_item_ids == {"i3"}
    assert [(r.item_id, r.type, r.value, r.occurred_at) for r in context.recent] == [
        ("i2", domain.InteractionType.CLICK, 0.0, NOW),
        ("i3", domain.InteractionType.RATING, 4.5, NOW - timedelta(hours=1)),
    ]
    assert bare.known
    assert (bare.seen_item_ids, bare.dismissed_item_ids, bare.recent) == (
        frozenset(),
        frozenset(),
        (),
    )
    assert (dict(bare.preferences), dict(bare.attributes)) == ({}, {})
    assert not unknown.known

    with database.connection() as conn:
        everything = queries.load_user_context(conn, "u1")
    assert everything.recent[-1].occurred_at == first  # before 1970, to the microsecond
    assert everything.recent[-1].occurred_at.utcoffset() == timedelta(0)


def _served(recset_id: str, item_ids: list[str], at: datetime = NOW) -> domain.ServedList:
    ranking = domain.RecommendationList(
        items=[domain.ScoredItem(i, 1.0 / (k + 1), "popular") for k, i in enumerate(item_ids)],
        algorithm=domain.Algorithm.POPULAR,
    )
    return domain.ServedList(recset_id=recset_id, generated_at=at, ranking=ranking)


def test_feedback_flags_the_training_top_n_and_serving_keeps_it(database: Database) -> None:
    later = NOW + timedelta(minutes=5, microseconds=250)
    _training_top_n(database, "u1", ["a", "b", "c"])
    _training_top_n(database, "u2", ["a", "z"])
    with database.transaction() as conn:
        queries.record_impressions(conn, [("u1", _served("r1", ["a", "b", "c"]), "web")])
        queries.record_feedback_batch(
            conn, [domain.Feedback("u1", "b", "r1", clicked=True, dismissed=True)], NOW
        )
    with database.transaction() as conn:
        queries.record_impressions(conn, [("u1", _served("r2", ["d", "b"], later), "ios")])
        queries.record_impressions(conn, [("u1", _served("r3", []), "web")])
    assert _stored(database, "u1") == [
        ("a", 1, False, False),
        ("b", 2, True, True),
        ("c", 3, False, False),
    ]
    assert _stored(database, "u2") == [("a", 1, False, False), ("z", 2, False, False)]
    with database.reader() as session:
        impression = session.get(m.Impression, "r2")
        empty = session.get(m.Impression, "r3")
    assert impression is not None
    assert empty is not None
    assert (impression.item_ids, impression.platform, impression.served_at) == (
        ["d", "b"],
        "ios",
        later,
    )
    assert empty.item_ids == []


def test_a_driver_error_surfaces_as_sqlalchemys_own(database: Database) -> None:
    # The error mapping (server.errors) knows SQLAlchemy's exceptions, not each driver's.
    missing = Prepared(text("SELECT x FROM no_such_table"))
    with database.connection() as conn, pytest.raises(DBAPIError) as raised:
        missing.rows(conn, {})
    assert not raised.value.connection_invalidated  # a bad statement is not a lost connection
    assert "no_such_table" in str(raised.value)


def test_a_batch_creates_its_users_and_stores_a_repeated_event_id_once(
    database: Database,
) -> None:
    with database.writer() as session:
        queries.upsert_items(session, [domain.Item("i1")], NOW)
    first = _event("same", NOW, platform="first")
    again = _event("same", NOW, platform="second")
    other = domain.Interaction("other", "u2", "i1", domain.InteractionType.VIEW, NOW)
    with database.connection() as conn:  # on PostgreSQL, one autocommit statement
        assert queries.insert_new_interactions(conn, [first, again, other], NOW) == {
            "same",
            "other",
        }
    with database.reader() as session:
        stored = session.scalars(select(m.Interaction).order_by(m.Interaction.event_id)).all()
        users = session.scalars(select(m.User.user_id).order_by(m.User.user_id)).all()
    assert [(i.event_id, i.platform) for i in stored] == [("other", ""), ("same", "first")]
    assert users == ["u1", "u2"]
