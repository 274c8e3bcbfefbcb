"""Bulk ingestion for the demo and CSV imports: executemany in chunks, idempotent on keys.

A multi-row ``VALUES`` statement is compiled afresh for every chunk, which costs more than the
insert itself at these sizes; one compiled statement executed with many parameter sets (the
DBAPI's executemany, batched by SQLAlchemy) runs an order of magnitude faster. Like the other
query functions these take the caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from recgrpc import domain
from recgrpc.db import models as m
from recgrpc.db.dialect import sql_of
from recgrpc.db.postgres import PostgresSql
from recgrpc.db.rows import (
    FEEDBACK_COLUMNS,
    INTERACTION_COLUMNS,
    feedback_row,
    interaction_row,
)
from recgrpc.db.sqlite import SqliteSql

__all__ = ["FEEDBACK_COLUMNS", "INTERACTION_COLUMNS", "feedback_row", "interaction_row"]

_DRIVER_REFUSALS = PostgresSql.driver_refusals + SqliteSql.driver_refusals


def refused_by_database(exc: BaseException) -> str | None:
    """The database's reason when ``exc`` is the database refusing data (a constraint, a type,
    a length: SQLSTATE classes 22 and 23), or None for anything else (an outage, a bug).

    Errors of SQL run on the driver's own cursor arrive unwrapped by SQLAlchemy: which of the
    driver's exceptions are refusals is the dialect's (``SqlDialect.driver_refusals``).
    """
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    refused = isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError) or isinstance(
        cause, _DRIVER_REFUSALS
    )
    if not refused:
        return None
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


CHUNK_ROWS = 5000
"""Rows per executemany call; bounds memory and the size of each IN (...) lookup."""


def dialect_insert(session: Session, table: type[m.Base] | Table) -> Any:
    """The backend's INSERT that supports ON CONFLICT (``db.dialect``)."""
    return sql_of(session).insert(table)


def _chunks(rows: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def insert_new(
    session: Session,
    table: type[m.Base],
    rows: Sequence[Mapping[str, Any]],
    key: str,
    *,
    chunk_size: int = CHUNK_ROWS,
) -> int:
    """Insert rows whose ``key`` is not stored yet; returns how many rows were new.

    Every row must have the same columns.
    """
    if not rows:
        return 0
    conn = session.connection()
    return sql_of(conn).insert_new(conn, table, rows, key, chunk_size)


def upsert(
    session: Session,
    table: type[m.Base],
    rows: Sequence[Mapping[str, Any]],
    key: Sequence[str],
    update_columns: Sequence[str],
    *,
    chunk_size: int = CHUNK_ROWS,
) -> None:
    """Insert rows, or update ``update_columns`` of rows whose ``key`` is stored."""
    if not rows:
        return
    conn = session.connection()
    stmt = dialect_insert(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(key), set_={c: stmt.excluded[c] for c in update_columns}
    )
    for chunk in _chunks(rows, chunk_size):
        conn.execute(stmt, list(chunk))


def ensure_users(session: Session, user_ids: Iterable[str], now: datetime) -> int:
    """Create bare users for ids not stored yet; returns how many were created."""
    rows = [
        {"user_id": uid, "attributes": {}, "created_at": now, "updated_at": now}
        for uid in sorted(set(user_ids))
    ]
    return insert_new(session, m.User, rows, "user_id")


def ensure_items(session: Session, item_ids: Iterable[str], now: datetime) -> int:
    """Create bare items (no features) for ids not stored yet; returns how many were created.

    History files often come without a catalogue; a bare item can still be learned from
    behaviour, and a later items import fills in its features.
    """
    rows = [
        {
            "item_id": iid,
            "title": "",
            "categories": [],
            "tags": [],
            "attributes": {},
            "active": True,
            "created_at": now,
            "updated_at": now,
        }
        for iid in sorted(set(item_ids))
    ]
    return insert_new(session, m.Item, rows, "item_id")


def upsert_items(session: Session, items: Sequence[domain.Item], now: datetime) -> None:
    """Insert or replace items (features, title, active); items without created_at keep theirs."""
    features = ["title", "categories", "tags", "attributes", "active", "updated_at"]

    def row(it: domain.Item) -> dict[str, Any]:
        return {
            "item_id": it.item_id,
            "title": it.title,
            "categories": list(it.categories),
            "tags": list(it.tags),
            "attributes": dict(it.attributes),
            "active": it.active,
            "created_at": it.created_at or now,
            "updated_at": now,
        }

    dated = [row(it) for it in items if it.created_at is not None]
    undated = [row(it) for it in items if it.created_at is None]
    upsert(session, m.Item, dated, ["item_id"], [*features, "created_at"])
    upsert(session, m.Item, undated, ["item_id"], features)


def upsert_users(session: Session, users: Sequence[domain.User], now: datetime) -> None:
    """Insert users or replace their attributes; preferences are left alone (see below)."""
    rows = [
        {
            "user_id": u.user_id,
            "attributes": dict(u.attributes),
            "created_at": now,
            "updated_at": now,
        }
        for u in users
    ]
    upsert(session, m.User, rows, ["user_id"], ["attributes", "updated_at"])


def upsert_preferences(session: Session, preferences: Sequence[tuple[str, str, float]]) -> None:
    """Set (user_id, category) -> score; other categories of the same users stay as they are."""
    rows = [{"user_id": u, "category": c, "score": s} for u, c, s in preferences]
    upsert(session, m.Preference, rows, ["user_id", "category"], ["score"])


def count_new_preferences(session: Session, preferences: Sequence[tuple[str, str, float]]) -> int:
    """How many (user_id, category) pairs in ``preferences`` are not stored yet."""
    wanted = {(u, c) for u, c, _ in preferences}
    users = sorted({u for u, _ in wanted})
    stored: set[tuple[str, str]] = set()
    conn = session.connection()
    for chunk in _chunks(users, CHUNK_ROWS):
        query = select(m.Preference.user_id, m.Preference.category).where(
            m.Preference.user_id.in_(chunk)
        )
        stored.update((u, c) for u, c in conn.execute(query))
    return len(wanted - stored)


def insert_interactions(
    session: Session, events: Sequence[domain.Interaction], now: datetime
) -> int:
    """Store events whose event_id is new (users must exist); returns how many were new."""
    rows = [interaction_row(e, now) for e in events]
    return insert_new(session, m.Interaction, rows, "event_id")


def insert_impressions(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store served lists (``impressions`` rows) whose recset_id is new; returns how many."""
    return insert_new(session, m.Impression, rows, "recset_id")


def insert_feedback(session: Session, feedback: Sequence[tuple[domain.Feedback, datetime]]) -> int:
    """Store feedback (with the time each was given) whose feedback_id is new; returns how many."""
    rows = [feedback_row(f, at) for f, at in feedback]
    return insert_new(session, m.Feedback, rows, "feedback_id")


def stored_keys(session: Session, table: type[m.Base], key: str, values: Iterable[str]) -> set[str]:
    """Which of ``values`` are stored in ``table.key``."""
    column = table.__table__.c[key]
    wanted = sorted(set(values))
    found: set[str] = set()
    for chunk in _chunks(wanted, CHUNK_ROWS):
        found.update(
            session.connection().execute(select(column).where(column.in_(chunk))).scalars()
        )
    return found
