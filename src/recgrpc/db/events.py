"""Events: interactions and feedback, written on every LogInteraction and SubmitFeedback.

Each function takes the caller's session or connection and never commits. The per-request
statements are ``db.prepared``'s; what differs by backend is ``db.dialect``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, exists, func, select
from sqlalchemy.orm import Session

from recgrpc import domain
from recgrpc.db import models as m
from recgrpc.db.dialect import core_connection, insert_for, sql_of
from recgrpc.db.prepared import Prepared, PreparedInsert
from recgrpc.db.rows import FEEDBACK_COLUMNS, feedback_row, interaction_row, table_of

CHUNK = 500
"""Ids per IN (...) lookup; keeps bound parameters under SQLite's per-statement limit."""

# Built once: an expanding IN compiles to one cached statement whatever the number of ids.
_ITEMS_AMONG = select(m.Item.item_id).where(m.Item.item_id.in_(bindparam("ids", expanding=True)))


def existing_item_ids(session: Session | Connection, item_ids: Iterable[str]) -> set[str]:
    """Which of ``item_ids`` are in the catalogue."""
    wanted = sorted(set(item_ids))
    found: set[str] = set()
    conn = core_connection(session)  # Core, not the ORM's result machinery (every event's path)
    for start in range(0, len(wanted), CHUNK):
        found.update(conn.scalars(_ITEMS_AMONG, {"ids": wanted[start : start + CHUNK]}))
    return found


def ensure_users(session: Session | Connection, user_ids: Iterable[str], now: datetime) -> None:
    """Create bare user rows for ids seen in events before any UpsertUsers."""
    conn = core_connection(session)
    sql_of(conn).insert_new_interactions(conn, [], sorted(set(user_ids)), now)


def insert_interactions(
    session: Session, events: Sequence[domain.Interaction], now: datetime
) -> int:
    """Store events, ignoring event_ids already stored; returns how many rows were new."""
    return len(insert_new_interactions(session, events, now))


def insert_new_interactions(
    session: Session | Connection, events: Sequence[domain.Interaction], now: datetime
) -> set[str]:
    """Store events (and bare users for new user ids), ignoring event_ids already stored;
    returns the event_ids stored now.

    An event_id repeated within ``events`` is stored once (the first occurrence). On
    PostgreSQL this is a single statement, so on an autocommit connection it is one round trip
    and its own transaction.
    """
    if not events:
        return set()
    conn = core_connection(session)
    rows = [interaction_row(event, now) for event in events]
    for row in rows:
        del row["received_at"]  # the statement's :now
    users = sorted({event.user_id for event in events})
    return sql_of(conn).insert_new_interactions(conn, rows, users, now)


def record_feedback(
    session: Session | Connection, feedback: domain.Feedback, now: datetime
) -> None:
    """``record_feedback_batch`` of one."""
    record_feedback_batch(session, [feedback], now)


_RECOMMENDATIONS = table_of(m.Recommendation)
# RETURNING says which feedback_ids were new (a repeated SubmitFeedback is stored once).
_INSERT_FEEDBACK = PreparedInsert(
    lambda dialect: (
        insert_for(dialect, table_of(m.Feedback))
        .on_conflict_do_nothing(index_elements=["feedback_id"])
        .returning(table_of(m.Feedback).c.feedback_id)
    ),
    FEEDBACK_COLUMNS,
)
_STORED_ITEM = (_RECOMMENDATIONS.c.user_id == bindparam("user_id")) & (
    _RECOMMENDATIONS.c.item_id == bindparam("item_id")
)
_FLAG_CLICKED = Prepared(_RECOMMENDATIONS.update().where(_STORED_ITEM).values(is_clicked=True))
_FLAG_DISMISSED = Prepared(_RECOMMENDATIONS.update().where(_STORED_ITEM).values(is_dismissed=True))


def record_feedback_batch(
    session: Session | Connection, feedback: Sequence[domain.Feedback], now: datetime
) -> set[str]:
    """Store feedback whose ``feedback_id`` is new and flag the clicked or dismissed items in
    the stored top-N; returns the feedback_ids stored now (a repeated one is stored once)."""
    conn = core_connection(session)
    rows = [feedback_row(f, now) for f in feedback]
    stored = {feedback_id for (feedback_id,) in _INSERT_FEEDBACK.insert(conn, rows)}
    new = [f for f, row in zip(feedback, rows, strict=True) if row["feedback_id"] in stored]
    keys = [{"user_id": f.user_id, "item_id": f.item_id} for f in new]
    _FLAG_CLICKED.execute_many(conn, [k for k, f in zip(keys, new, strict=True) if f.clicked])
    _FLAG_DISMISSED.execute_many(conn, [k for k, f in zip(keys, new, strict=True) if f.dismissed])
    return stored


def user_has_history(session: Session, user_id: str) -> bool:
    """Whether any interaction of ``user_id`` is stored."""
    return bool(session.scalar(select(exists().where(m.Interaction.user_id == user_id))))


def hourly_event_counts(session: Session, since: datetime) -> list[tuple[str, str, int, int]]:
    """``(item_id, type, hour, events)`` since ``since``, ``hour`` in hours since the epoch.

    Trending needs counts per item and hour, not events: grouping in the database returns far
    fewer rows than there are events and skips per-row datetime conversion in Python.
    """
    occurred = m.Interaction.occurred_at
    hour: Any = sql_of(session).epoch_bucket(occurred, 3600)
    # Core, not the ORM's result machinery: the window can hold tens of thousands of groups.
    rows = core_connection(session).execute(
        select(m.Interaction.item_id, m.Interaction.type, hour, func.count())
        .where(occurred >= since)
        .group_by(m.Interaction.item_id, m.Interaction.type, hour)
    )
    return [(item_id, kind, int(h), int(n)) for item_id, kind, h, n in rows]


def newest_event_time(session: Session) -> datetime | None:
    """The latest ``occurred_at`` stored, None without events."""
    value: datetime | None = session.scalar(select(func.max(m.Interaction.occurred_at)))
    return value


def event_window_stamp(session: Session, since: datetime) -> tuple[int, int, datetime | None]:
    """(events, largest id, newest ``received_at``) of the events since ``since``: unchanged
    while the window's events are, so a refresh can keep the counts it read last time. Every
    insert raises the id or, where SQLite reuses the id of a deleted last row, ``received_at``;
    a deletion or an event leaving the window lowers the count. One indexed range scan in the
    database instead of every group's row in Python."""
    i = m.Interaction
    count, largest, received = session.execute(
        select(func.count(), func.max(i.id), func.max(i.received_at)).where(i.occurred_at >= since)
    ).one()
    return int(count), int(largest or 0), received
