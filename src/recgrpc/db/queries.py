"""Query functions. Each takes a Session owned by the caller; none opens or commits one."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BindParameter,
    Connection,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.orm import Session

from recgrpc import domain
from recgrpc.db import bulk
from recgrpc.db import models as m
from recgrpc.db.bulk import (
    FEEDBACK_COLUMNS,
    INTERACTION_COLUMNS,
    feedback_row,
    insert_for,
    interaction_row,
)
from recgrpc.db.prepared import Prepared, PreparedInsert


def core_connection(executor: Session | Connection) -> Connection:
    """The Core connection behind a session (its transaction's), or the connection itself."""
    return executor if isinstance(executor, Connection) else executor.connection()


def _json_rows(rows: list[dict[str, Any]], time_column: str) -> str:
    """``rows`` as one JSON parameter for PostgreSQL's ``json_to_recordset``, ``time_column``
    in ISO 8601 with its offset (read back as TIMESTAMPTZ). Non-finite floats are refused."""
    for row in rows:
        row[time_column] = row[time_column].isoformat()
    return json.dumps(rows, allow_nan=False)


def _table(model: type[m.Base]) -> Table:
    """The Core table behind ``model`` (Core inserts skip the ORM's bulk bookkeeping)."""
    return m.Base.metadata.tables[model.__tablename__]


def _chunks(rows: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    # Keeps bound parameters under SQLite's per-statement limit.
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def upsert_items(session: Session, items: Sequence[domain.Item], now: datetime) -> None:
    """Insert or replace items; an item sent without created_at keeps the one it has."""
    bulk.upsert_items(session, items, now)


def ensure_users(session: Session | Connection, user_ids: Iterable[str], now: datetime) -> None:
    """Create bare user rows for ids seen in events before any UpsertUsers."""
    rows = [
        {"user_id": uid, "attributes": {}, "created_at": now, "updated_at": now}
        for uid in sorted(set(user_ids))
    ]
    # On the write path of every event: one prepared multi-row statement.
    _ENSURE_USERS.insert(core_connection(session), rows)


_ENSURE_USERS = PreparedInsert(
    lambda dialect: insert_for(dialect, _table(m.User)).on_conflict_do_nothing(
        index_elements=["user_id"]
    ),
    ("user_id", "attributes", "created_at", "updated_at"),
)


def upsert_users(session: Session, users: Sequence[domain.User], now: datetime) -> None:
    """Insert or update users; each user's preferences are replaced by the ones given."""
    bulk.upsert_users(session, users, now)
    ids = [u.user_id for u in users]
    for chunk in _chunks(ids):
        session.execute(delete(m.Preference).where(m.Preference.user_id.in_(chunk)))
    prefs = [
        {"user_id": u.user_id, "category": cat, "score": score}
        for u in users
        for cat, score in u.preferences.items()
    ]
    for chunk in _chunks(prefs):
        session.execute(insert(_table(m.Preference)), list(chunk))


def delete_user(session: Session, user_id: str) -> bool:
    """Erase every row about ``user_id``; True when anything was stored."""
    removed = 0
    for model in m.USER_TABLES:
        result = session.execute(delete(model).where(model.__table__.c.user_id == user_id))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed > 0


# Built once: an expanding IN compiles to one cached statement whatever the number of ids.
_ITEMS_AMONG = select(m.Item.item_id).where(m.Item.item_id.in_(bindparam("ids", expanding=True)))


def existing_item_ids(session: Session | Connection, item_ids: Iterable[str]) -> set[str]:
    wanted = sorted(set(item_ids))
    found: set[str] = set()
    conn = core_connection(session)  # Core, not the ORM's result machinery (every event's path)
    for chunk in _chunks(wanted):
        found.update(conn.scalars(_ITEMS_AMONG, {"ids": list(chunk)}))
    return found


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
    if conn.dialect.name == "postgresql":
        rows = [interaction_row(event, now) for event in events]
        for row in rows:
            del row["received_at"]  # :now
        stored = _PG_INSERT_EVENTS_AND_USERS.rows(
            conn,
            {
                "events": _json_rows(rows, "occurred_at"),
                "user_ids": json.dumps(sorted({event.user_id for event in events})),
                "now": now,
            },
        )
        return {event_id for (event_id,) in stored}
    ensure_users(conn, (e.user_id for e in events), now)
    rows = [interaction_row(e, now) for e in events]
    return {event_id for (event_id,) in _INSERT_NEW_INTERACTIONS.insert(conn, rows)}


def _array(name: str, item: Any) -> BindParameter[Any]:
    return bindparam(name, type_=ARRAY(item))


# The bare users a batch of events needs and the events themselves in one statement. The batch
# travels as one JSON document (rows, and the sorted user ids): the driver's per-element array
# encoding cost more CPU than the statement itself at small batches, while json.dumps is C and
# the statement's text stays the same for any batch size. Users are inserted in id order and
# events come in event_id order, so concurrent batches take row locks in one order.
_PG_INSERT_EVENTS_AND_USERS = Prepared(
    text(
        """
WITH new_users AS (
    INSERT INTO users (user_id, attributes, created_at, updated_at)
    SELECT wanted.user_id, CAST('{}' AS JSON), :now, :now
    FROM json_array_elements_text(CAST(:user_ids AS JSON))
         WITH ORDINALITY AS wanted(user_id, position)
    ORDER BY wanted.position
    ON CONFLICT (user_id) DO NOTHING
)
INSERT INTO interactions (event_id, user_id, item_id, type, value, content_type, platform,
                          metadata, recset_id, occurred_at, received_at)
SELECT e.event_id, e.user_id, e.item_id, e.type, e.value, e.content_type, e.platform,
       e.metadata, e.recset_id, e.occurred_at, :now
FROM ROWS FROM (
         json_to_recordset(CAST(:events AS JSON))
         AS (event_id TEXT, user_id TEXT, item_id TEXT, type TEXT, value DOUBLE PRECISION,
             content_type TEXT, platform TEXT, metadata JSON, recset_id TEXT,
             occurred_at TIMESTAMPTZ)
     ) WITH ORDINALITY
     AS e(event_id, user_id, item_id, type, value, content_type, platform, metadata,
          recset_id, occurred_at, position)
ORDER BY e.position
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""
    )
    .bindparams(
        bindparam("now", type_=m.UTCDateTime()),
        bindparam("events", type_=Text()),
        bindparam("user_ids", type_=Text()),
    )
    .columns(event_id=String())
)


# RETURNING says reliably which rows were new (a multi-row rowcount would not say which).
_INSERT_NEW_INTERACTIONS = PreparedInsert(
    lambda dialect: (
        insert_for(dialect, _table(m.Interaction))
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(_table(m.Interaction).c.event_id)
    ),
    INTERACTION_COLUMNS,
)


# The per-request statements, compiled once and run on the driver's cursor (db.prepared).
_USER: BindParameter[str] = bindparam("user_id")
_USER_ATTRIBUTES = Prepared(select(m.User.attributes).where(m.User.user_id == _USER))
# The whole history, newest first: its item ids are what the user has seen, and its head is the
# recent activity folded into the user's vector. One indexed scan instead of two.
_HISTORY = Prepared(
    select(
        m.Interaction.item_id, m.Interaction.type, m.Interaction.value, m.Interaction.occurred_at
    )
    .where(m.Interaction.user_id == _USER)
    .order_by(m.Interaction.occurred_at.desc(), m.Interaction.id.desc())
)
_DISMISSED_ITEMS = Prepared(
    select(m.Feedback.item_id)
    .where(m.Feedback.user_id == _USER, m.Feedback.dismissed.is_(True))
    .distinct()
)
_PREFERENCES = Prepared(
    select(m.Preference.category, m.Preference.score).where(m.Preference.user_id == _USER)
)


# On PostgreSQL the same four reads as one statement: one round trip instead of four, and no
# per-row decoding in Python (history and preferences come back as JSON, which the driver parses
# in C). At ~130 events per user: 1.45 -> 0.7 ms of CPU and 2.7 -> 2.0 ms wall per context.
_PG_USER_CONTEXT = Prepared(
    text(
        """
SELECT u.attributes,
       (SELECT json_agg(json_build_array(i.item_id, i.type, i.value, i.occurred_at)
                        ORDER BY i.occurred_at DESC, i.id DESC)
        FROM interactions AS i WHERE i.user_id = u.user_id),
       (SELECT json_agg(DISTINCT f.item_id)
        FROM feedback AS f WHERE f.user_id = u.user_id AND f.dismissed),
       (SELECT json_object_agg(p.category, p.score)
        FROM preferences AS p WHERE p.user_id = u.user_id)
FROM users AS u
WHERE u.user_id = :user_id
"""
    ).bindparams(bindparam("user_id", type_=String()))
)


def load_user_context(
    conn: Connection, user_id: str, recent_limit: int = 100
) -> domain.UserContext:
    """Everything ranking needs about one user, in four indexed queries (one on PostgreSQL).

    Takes a Core connection (``Database.connection``): on every GetRecommendations, an ORM
    session and transaction cost more than the queries.
    """
    params = {"user_id": user_id}
    history: list[Any]
    if conn.dialect.name == "postgresql":
        found = _PG_USER_CONTEXT.rows(conn, params)
        if not found:
            return domain.UserContext(user_id=user_id, known=False)
        attributes, history, dismissed, preferences = found[0]
        history = history or []
        recent = [
            (item_id, kind, float(value), datetime.fromisoformat(at).astimezone(UTC))
            for item_id, kind, value, at in history[:recent_limit]
        ]
        preferences = {category: float(score) for category, score in (preferences or {}).items()}
    else:
        found = _USER_ATTRIBUTES.rows(conn, params)
        if not found:
            return domain.UserContext(user_id=user_id, known=False)
        attributes = found[0][0]
        history = _HISTORY.rows(conn, params, convert=recent_limit)
        recent = history[:recent_limit]
        dismissed = [item_id for (item_id,) in _DISMISSED_ITEMS.rows(conn, params)]
        preferences = dict(_PREFERENCES.rows(conn, params))
    return domain.UserContext(
        user_id=user_id,
        known=True,
        seen_item_ids=frozenset(row[0] for row in history),
        dismissed_item_ids=frozenset(dismissed or ()),
        preferences=preferences,
        attributes=dict(attributes or {}),
        recent=tuple(
            domain.RecentInteraction(item_id, domain.InteractionType(kind), value, at)
            for item_id, kind, value, at in recent
        ),
    )


_RECOMMENDATIONS = m.Base.metadata.tables["recommendations"]
_IMPRESSIONS = m.Base.metadata.tables["impressions"]
_IMPRESSION_COLUMNS = (
    "recset_id", "user_id", "algorithm", "model_version", "fallback_reason", "item_ids",
    "platform", "served_at",
)  # fmt: skip
_INSERT_IMPRESSION = PreparedInsert(lambda _: insert(_IMPRESSIONS), _IMPRESSION_COLUMNS)


def record_impressions(
    session: Session | Connection, served: Sequence[tuple[str, domain.ServedList, str]]
) -> None:
    """Store served lists as impressions: ``(user_id, list, platform)`` rows.

    The stored top-N (``recommendations``) is the training job's and is not touched: serving
    only reads. A batch is one statement (on PostgreSQL the rows travel as one JSON parameter:
    the driver's encoding of a parameter per value was most of the write).
    """
    if not served:
        return
    conn = core_connection(session)
    impressions: list[dict[str, Any]] = [
        {
            "recset_id": listed.recset_id,
            "user_id": user_id,
            "algorithm": listed.ranking.algorithm.value,
            "model_version": listed.ranking.model_version,
            "fallback_reason": listed.ranking.fallback_reason,
            "item_ids": [it.item_id for it in listed.ranking.items],
            "platform": platform,
            "served_at": listed.generated_at,
        }
        for user_id, listed, platform in served
    ]
    if conn.dialect.name == "postgresql":
        _PG_RECORD_IMPRESSIONS.execute(conn, {"impressions": _json_rows(impressions, "served_at")})
        return
    _INSERT_IMPRESSION.insert(conn, impressions)


_PG_RECORD_IMPRESSIONS = Prepared(
    text(
        """
INSERT INTO impressions (recset_id, user_id, algorithm, model_version, fallback_reason,
                         item_ids, platform, served_at)
SELECT recset_id, user_id, algorithm, model_version, fallback_reason, item_ids, platform,
       served_at
FROM json_to_recordset(CAST(:impressions AS JSON))
     AS (recset_id TEXT, user_id TEXT, algorithm TEXT, model_version TEXT,
         fallback_reason TEXT, item_ids JSON, platform TEXT, served_at TIMESTAMPTZ)
"""
    ).bindparams(bindparam("impressions", type_=Text()))
)


_IMPRESSION_SOURCES = select(
    m.Impression.recset_id, m.Impression.algorithm, m.Impression.model_version
).where(m.Impression.recset_id.in_(bindparam("recset_ids", expanding=True)))


def impression_sources(
    session: Session | Connection, recset_ids: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """recset_id -> (algorithm, model_version) of the stored impressions among ``recset_ids``."""
    wanted = sorted({r for r in recset_ids if r})
    if not wanted:
        return {}
    rows = core_connection(session).execute(_IMPRESSION_SOURCES, {"recset_ids": wanted})
    return {recset_id: (algorithm, version) for recset_id, algorithm, version in rows}


def lock_users(executor: Session | Connection, user_ids: Iterable[str]) -> None:
    """Serialise writers of these users' stored top-N until the transaction ends.

    Two lists served at once to the same user would otherwise both delete the old rows (neither
    sees the other's uncommitted insert) and then collide on (user_id, item_id). SQLite already
    runs one writer at a time; PostgreSQL takes transaction-scoped advisory locks (which work
    for users without a row, too), in sorted order so that two transactions never wait on each
    other's, in one statement. Each lock takes a slot in PostgreSQL's shared lock table, so
    callers lock a few hundred users per transaction, not all of them.
    """
    conn = core_connection(executor)
    wanted = sorted(set(user_ids))
    if wanted and conn.dialect.name == "postgresql":
        _LOCK_USERS.rows(conn, {"user_ids": wanted})


_LOCK_USERS = Prepared(
    text("SELECT count(pg_advisory_xact_lock(hashtext(u))) FROM unnest(:user_ids) AS u")
    .bindparams(_array("user_ids", String()))
    .columns(locked=Integer())
)


def record_feedback(
    session: Session | Connection, feedback: domain.Feedback, now: datetime
) -> None:
    record_feedback_batch(session, [feedback], now)


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


_INSERT_FEEDBACK = PreparedInsert(
    lambda dialect: (
        insert_for(dialect, _table(m.Feedback))
        .on_conflict_do_nothing(index_elements=["feedback_id"])
        .returning(_table(m.Feedback).c.feedback_id)
    ),
    FEEDBACK_COLUMNS,
)
_STORED_ITEM = (_RECOMMENDATIONS.c.user_id == _USER) & (
    _RECOMMENDATIONS.c.item_id == bindparam("item_id")
)
_FLAG_CLICKED = Prepared(_RECOMMENDATIONS.update().where(_STORED_ITEM).values(is_clicked=True))
_FLAG_DISMISSED = Prepared(_RECOMMENDATIONS.update().where(_STORED_ITEM).values(is_dismissed=True))


def user_exists(session: Session, user_id: str) -> bool:
    return bool(session.scalar(select(exists().where(m.User.user_id == user_id))))


def user_has_history(session: Session, user_id: str) -> bool:
    return bool(session.scalar(select(exists().where(m.Interaction.user_id == user_id))))


def hourly_event_counts(session: Session, since: datetime) -> list[tuple[str, str, int, int]]:
    """``(item_id, type, hour, events)`` since ``since``, ``hour`` in hours since the epoch.

    Trending needs counts per item and hour, not events: grouping in the database returns far
    fewer rows than there are events and skips per-row datetime conversion in Python.
    """
    occurred = m.Interaction.occurred_at
    if session.get_bind().dialect.name == "sqlite":
        # SQLite stores UTC text; strftime('%s') gives epoch seconds, integer division the hour.
        hour: Any = cast(func.strftime("%s", occurred), Integer) / 3600
    else:
        hour = cast(func.floor(func.extract("epoch", occurred) / 3600), Integer)
    rows = session.execute(
        select(m.Interaction.item_id, m.Interaction.type, hour, func.count())
        .where(occurred >= since)
        .group_by(m.Interaction.item_id, m.Interaction.type, hour)
    )
    return [(item_id, kind, int(h), int(n)) for item_id, kind, h, n in rows]


def newest_event_time(session: Session) -> datetime | None:
    value: datetime | None = session.scalar(select(func.max(m.Interaction.occurred_at)))
    return value


def catalogue_stamp(session: Session) -> tuple[int, datetime | None]:
    """(item count, newest ``updated_at``): changes with every catalogue write (items are
    never deleted, and every upsert sets ``updated_at``), at the cost of one scan in the
    database instead of reading every item into Python."""
    count, newest = session.execute(
        select(func.count(), func.max(m.Item.updated_at)).select_from(m.Item)
    ).one()
    return int(count), newest


def catalogue(session: Session) -> list[tuple[str, list[str], list[str], datetime]]:
    """(item_id, categories, tags, created_at) of every active item, ordered by id."""
    rows = session.execute(
        select(m.Item.item_id, m.Item.categories, m.Item.tags, m.Item.created_at)
        .where(m.Item.active.is_(True))
        .order_by(m.Item.item_id)
    ).all()
    return [(r[0], list(r[1] or []), list(r[2] or []), r[3]) for r in rows]


def count_rows(session: Session, model: type[m.Base], **filters: Any) -> int:
    stmt = select(func.count()).select_from(model)
    for name, value in filters.items():
        stmt = stmt.where(getattr(model, name) == value)
    return int(session.scalar(stmt) or 0)


def model_summary(session: Session, version: str) -> tuple[datetime, dict[str, Any]] | None:
    """``(created_at, metrics)`` of a stored model, without reading its artifact bytes."""
    row = session.execute(
        select(m.ModelArtifact.created_at, m.ModelArtifact.metrics).where(
            m.ModelArtifact.version == version
        )
    ).first()
    return None if row is None else (row[0], dict(row[1] or {}))
