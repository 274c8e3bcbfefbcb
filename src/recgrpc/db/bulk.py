"""Bulk ingestion for the demo and CSV imports: executemany in chunks, idempotent on keys.

A multi-row ``VALUES`` statement is compiled afresh for every chunk, which costs more than the
insert itself at these sizes; one compiled statement executed with many parameter sets (the
DBAPI's executemany, batched by SQLAlchemy) runs an order of magnitude faster. Like the other
query functions these take the caller's session and never commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg import sql as psql
from sqlalchemy import JSON, Column, Connection, MetaData, Table, bindparam, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from recgrpc import domain
from recgrpc.db import models as m


def refused_by_database(exc: BaseException) -> str | None:
    """The database's reason when ``exc`` is the database refusing data (a constraint, a type,
    a length: SQLSTATE classes 22 and 23), or None for anything else (an outage, a bug).

    COPY runs on the driver's own cursor, so its errors arrive unwrapped by SQLAlchemy.
    """
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    refused = isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError) or isinstance(
        cause, psycopg.DataError | psycopg.IntegrityError
    )
    if not refused:
        return None
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


CHUNK_ROWS = 5000
"""Rows per executemany call; bounds memory and the size of each IN (...) lookup."""


def dialect_insert(session: Session, table: type[m.Base] | Table) -> Any:
    """A dialect-specific INSERT that supports ON CONFLICT (SQLite and PostgreSQL)."""
    return insert_for(session.get_bind().dialect.name, table)


def insert_for(dialect: str, table: type[m.Base] | Table) -> Any:
    """``dialect_insert`` by dialect name."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect {dialect!r}")


INTERACTION_COLUMNS = (
    "event_id", "user_id", "item_id", "type", "value", "content_type", "platform", "metadata",
    "recset_id", "occurred_at", "received_at",
)  # fmt: skip
"""The columns ``interaction_row`` fills."""


def interaction_row(event: domain.Interaction, now: datetime) -> dict[str, Any]:
    """The ``interactions`` row for an event received at ``now``."""
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "type": event.type.value,
        "value": event.value,
        "content_type": event.content_type,
        "platform": event.platform,
        "metadata": dict(event.metadata),
        "recset_id": event.recset_id,
        "occurred_at": event.occurred_at,
        "received_at": now,
    }


FEEDBACK_COLUMNS = (
    "feedback_id", "recset_id", "user_id", "item_id", "clicked", "dismissed", "rating",
    "created_at",
)  # fmt: skip
"""The columns ``feedback_row`` fills."""


def feedback_row(feedback: domain.Feedback, at: datetime) -> dict[str, Any]:
    """The ``feedback`` row for feedback given at ``at`` (a new ``feedback_id`` if it has none)."""
    return {
        "feedback_id": feedback.feedback_id or str(uuid.uuid4()),
        "recset_id": feedback.recset_id,
        "user_id": feedback.user_id,
        "item_id": feedback.item_id,
        "clicked": feedback.clicked,
        "dismissed": feedback.dismissed,
        "rating": feedback.rating,
        "created_at": at,
    }


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
    if conn.dialect.name == "sqlite":
        return _insert_new_sqlite(conn, table, rows, key, chunk_size)
    return _insert_new_postgres(conn, table, rows, key, chunk_size)


def _insert_new_sqlite(
    conn: Connection,
    table: type[m.Base],
    rows: Sequence[Mapping[str, Any]],
    key: str,
    chunk_size: int,
) -> int:
    # SQLAlchemy's per-row parameter handling costs more than SQLite's insert itself, so the
    # compiled statement runs through the driver with values converted column by column by
    # each column type's own bind processor (the same conversion SQLAlchemy would apply).
    columns = list(rows[0])
    core = table.__table__
    stmt = (
        sqlite.insert(table)
        .values({c: bindparam(c) for c in columns})
        .on_conflict_do_nothing(index_elements=[key])
    )
    compiled = stmt.compile(dialect=conn.dialect)
    order = list(compiled.positiontup or ())
    processors = [core.c[c].type.bind_processor(conn.dialect) for c in order]
    sql = str(compiled)
    inserted = 0
    for chunk in _chunks(rows, chunk_size):
        values = []
        for name, process in zip(order, processors, strict=True):
            column = [row[name] for row in chunk]
            if process and column.count(column[0]) == len(column):
                column = [process(column[0])] * len(column)  # e.g. received_at: convert once
            elif process:
                column = list(map(process, column))
            values.append(column)
        result = conn.exec_driver_sql(sql, list(zip(*values, strict=True)))
        inserted += result.rowcount
    return inserted


def _insert_new_postgres(
    conn: Connection,
    table: type[m.Base],
    rows: Sequence[Mapping[str, Any]],
    key: str,
    chunk_size: int,
) -> int:
    # COPY into a transaction-scoped staging table, then one INSERT ... SELECT ... ON CONFLICT
    # DO NOTHING: several times faster than batched INSERTs, and its rowcount is exact.
    core = m.Base.metadata.tables[table.__tablename__]
    names = list(rows[0])
    staging = Table(
        f"staging_{core.name}",
        MetaData(),
        *(Column(name, core.c[name].type) for name in names),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    staging.create(conn, checkfirst=True)
    as_json = [isinstance(core.c[name].type, JSON) for name in names]
    copy = psql.SQL("COPY {} ({}) FROM STDIN").format(
        psql.Identifier(staging.name), psql.SQL(", ").join(map(psql.Identifier, names))
    )
    move = (
        postgresql.insert(core)
        .from_select(names, select(*staging.c), include_defaults=False)
        .on_conflict_do_nothing(index_elements=[key])
    )
    driver = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    inserted = 0
    for chunk in _chunks(rows, chunk_size):
        with driver.cursor() as cursor, cursor.copy(copy) as stream:
            for row in chunk:
                stream.write_row(
                    [
                        json.dumps(row[name]) if to_json else row[name]
                        for name, to_json in zip(names, as_json, strict=True)
                    ]
                )
        inserted += conn.execute(move, execution_options={"preserve_rowcount": True}).rowcount
        conn.execute(staging.delete())
    return inserted


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
