"""PostgreSQL's SQL (``SqlDialect``): every batch is one statement taking the batch as JSON.

One way to send a batch: the rows travel as one JSON document that ``json_to_recordset`` turns
back into typed rows inside the statement. psycopg encodes arrays (``unnest``) and many
parameters element by element in Python, which cost more CPU than the statement itself at the
batch sizes of LogInteraction and GetRecommendations, while ``json.dumps`` is C and the
statement's text stays the same for any batch size, so it is prepared once. ``COPY`` needs a
staging table and two statements per batch, and the raw driver's cursor. The measurements are
in ``bench/group_commit.py`` and ``bench/import_speed.py`` (README, "Performance").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
from sqlalchemy import (
    URL,
    Connection,
    Date,
    Engine,
    Integer,
    Interval,
    String,
    Text,
    bindparam,
    cast,
    event,
    func,
    literal,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from recgrpc.db import models as m
from recgrpc.db.change_feed import CHANNEL, UserChangeFeed
from recgrpc.db.dialect import (
    IMPRESSION_COLUMNS,
    RECOMMENDATION_COLUMNS,
    ChangeListener,
    SqlDialect,
    UserContextRows,
    origin_of,
    recommendations_upsert,
)
from recgrpc.db.prepared import Prepared
from recgrpc.db.rows import table_of


def json_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as one JSON parameter for ``json_to_recordset``: times in ISO 8601 with their
    offset (read back as TIMESTAMPTZ); non-finite floats are refused."""
    return json.dumps(
        [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()} for r in rows],
        allow_nan=False,
    )


def _recordset(parameter: str, table: str, columns: Sequence[str], alias: str) -> str:
    """``json_to_recordset(:parameter)`` typed as ``table``'s ``columns``."""
    core = m.Base.metadata.tables[table]
    dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]  # untyped upstream
    typed = ", ".join(
        f"{c} {core.c[c].type.dialect_impl(dialect).compile(dialect=dialect)}" for c in columns
    )
    return f"json_to_recordset(CAST(:{parameter} AS JSON)) AS {alias}({typed})"


# The bare users a batch of events needs and the events themselves in one statement. Users are
# inserted in id order and events come in event_id order, so concurrent batches take row locks
# in one order.
_INSERT_EVENTS_AND_USERS = Prepared(
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
RETURNING event_id, pg_notify(:channel, :origin || ' ' || user_id)
"""
    )
    .bindparams(
        bindparam("now", type_=m.UTCDateTime()),
        bindparam("events", type_=Text()),
        bindparam("user_ids", type_=Text()),
        bindparam("channel", value=CHANNEL, type_=String()),
        bindparam("origin", type_=String()),
    )
    .columns(event_id=String(), notified=Text())
)
# Other server processes evict these users' cached contexts (db.change_feed); sent with the
# transaction's commit, and only then (each user once per transaction).
_NOTIFY_USERS = Prepared(
    text(
        "SELECT count(pg_notify(:channel, :origin || ' ' || u))"
        " FROM json_array_elements_text(CAST(:user_ids AS JSON)) AS u"
    )
    .bindparams(
        bindparam("user_ids", type_=Text()),
        bindparam("channel", value=CHANNEL, type_=String()),
        bindparam("origin", type_=String()),
    )
    .columns(notified=Integer())
)

# One user's four reads in one statement: one round trip instead of four, and no per-row
# decoding in Python (history and preferences come back as JSON, which the driver parses in C).
_USER_CONTEXT = Prepared(
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

# The served lists in one round trip. The stored top-N (recommendations) is training's and is
# not touched here. Each list travels as a JSON array in IMPRESSION_COLUMNS order rather than an
# object: the writer thread encodes every served list, and arrays spare it the keys.
_IMPRESSIONS = m.Base.metadata.tables["impressions"]
_PG = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]  # untyped upstream
_IMPRESSION_FIELDS = ", ".join(
    f"i -> {n}" if c == "item_ids"
    else f"CAST(i ->> {n} AS {_IMPRESSIONS.c[c].type.dialect_impl(_PG).compile(dialect=_PG)})"
    for n, c in enumerate(IMPRESSION_COLUMNS)
)  # fmt: skip
_RECORD_IMPRESSIONS = Prepared(
    text(
        f"""
INSERT INTO impressions ({", ".join(IMPRESSION_COLUMNS)})
SELECT {_IMPRESSION_FIELDS}
FROM json_array_elements(CAST(:impressions AS JSON)) AS i
"""
    ).bindparams(bindparam("impressions", type_=Text()))
)
# served_at, the only datetime, in ISO 8601 with its offset (read back as TIMESTAMPTZ).
_encode = json.JSONEncoder(
    allow_nan=False, separators=(",", ":"), default=datetime.isoformat
).encode
_UPSERT_RECOMMENDATIONS = text(
    recommendations_upsert(_recordset("rows", "recommendations", RECOMMENDATION_COLUMNS, "t"))
).bindparams(bindparam("rows", type_=Text()))
# Advisory locks in sorted order, so two transactions never wait on each other's.
_LOCK_USERS = Prepared(
    text(
        "SELECT count(pg_advisory_xact_lock(hashtext(u)))"
        " FROM json_array_elements_text(CAST(:user_ids AS JSON)) AS u"
    )
    .bindparams(bindparam("user_ids", type_=Text()))
    .columns(locked=Integer())
)


class PostgresSql(SqlDialect):
    name: ClassVar[str] = "postgresql"
    autocommit_batches: ClassVar[bool] = True
    writer_threads: ClassVar[int] = 2
    driver_refusals: ClassVar[tuple[type[Exception], ...]] = (
        psycopg.DataError,
        psycopg.IntegrityError,
    )

    def configure(self, engine: Engine) -> None:
        """Every session in UTC, whatever the server's default zone: times are rendered in the
        session's zone, and year-1 times (items may be that old) shown west of Greenwich are BC,
        which neither psycopg nor the JSON reads here can turn back into a datetime."""

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cursor:
                cursor.execute("SET TIME ZONE 'UTC'")
            dbapi_conn.commit()  # else the first rollback on the pool's return would undo it

    def epoch_bucket(
        self, column: InstrumentedAttribute[datetime], seconds: int
    ) -> ColumnElement[Any]:
        return cast(func.floor(func.extract("epoch", column) / seconds), Integer)

    def shifted(self, column: InstrumentedAttribute[datetime], seconds: int) -> ColumnElement[Any]:
        return column + literal(timedelta(seconds=seconds), Interval())

    def utc_day(self, column: InstrumentedAttribute[datetime]) -> ColumnElement[Any]:
        return cast(func.timezone("UTC", column), Date)

    def lock_users(self, conn: Connection, user_ids: Sequence[str]) -> None:
        # Transaction-scoped advisory locks work for users without a row, too. Each takes a slot
        # in PostgreSQL's shared lock table: callers lock a few hundred users per transaction.
        if user_ids:
            _LOCK_USERS.rows(conn, {"user_ids": json.dumps(list(user_ids))})

    def relax_durability(self, conn: Connection) -> None:
        conn.execute(text("SET LOCAL synchronous_commit TO OFF"))

    def refresh_statistics(self, conn: Connection, table: str) -> None:
        # With stale statistics the planner deletes each chunk of a bulk rewrite by a
        # sequential scan instead of the index.
        conn.execute(text(f"ANALYZE {m.Base.metadata.tables[table].name}"))

    def insert_new_interactions(
        self, conn: Connection, rows: list[dict[str, Any]], user_ids: list[str], now: datetime
    ) -> set[str]:
        values = {"events": json_rows(rows), "user_ids": json.dumps(user_ids), "now": now}
        stored = _INSERT_EVENTS_AND_USERS.rows(conn, {**values, "origin": origin_of(conn)})
        # Each stored event notified its user (db.change_feed), in the statement's transaction.
        return {event_id for event_id, _ in stored}

    def notify_users(self, conn: Connection, user_ids: Sequence[str]) -> None:
        if user_ids:
            _NOTIFY_USERS.rows(
                conn, {"user_ids": json.dumps(list(user_ids)), "origin": origin_of(conn)}
            )

    def user_change_feed(
        self, url: URL, connect_args: Mapping[str, Any], listener: ChangeListener, origin: str
    ) -> UserChangeFeed:
        return UserChangeFeed(url, connect_args, listener, origin)

    def user_context_rows(
        self, conn: Connection, user_id: str, recent_limit: int
    ) -> UserContextRows | None:
        found = _USER_CONTEXT.rows(conn, {"user_id": user_id})
        if not found:
            return None
        attributes, history, dismissed, preferences = found[0]
        # The first ``recent_limit`` rows as (item_id, type, value, occurred_at); the rest only
        # for their item ids (what the user has seen), left as the driver parsed them.
        history = history or []
        recent: list[Any] = [
            (item_id, kind, float(value), datetime.fromisoformat(at).astimezone(UTC))
            for item_id, kind, value, at in history[:recent_limit]
        ]
        preferences = {category: float(score) for category, score in (preferences or {}).items()}
        return attributes, recent + history[recent_limit:], list(dismissed or ()), preferences

    def record_impressions(self, conn: Connection, impressions: Sequence[tuple[Any, ...]]) -> None:
        _RECORD_IMPRESSIONS.execute(conn, {"impressions": _encode(impressions)})

    def insert_new(
        self,
        conn: Connection,
        table: type[m.Base],
        rows: Sequence[Mapping[str, Any]],
        key: str,
        chunk_size: int,
    ) -> int:
        core = table_of(table)
        names = list(rows[0])
        statement = text(
            f"INSERT INTO {core.name} ({', '.join(names)}) "
            f"SELECT {', '.join(names)} FROM {_recordset('rows', core.name, names, 'r')} "
            f"ON CONFLICT ({key}) DO NOTHING"
        ).bindparams(bindparam("rows", type_=Text()))
        inserted = 0
        for start in range(0, len(rows), chunk_size):
            result = conn.execute(
                statement,
                {"rows": json_rows(rows[start : start + chunk_size])},
                execution_options={"preserve_rowcount": True},
            )
            inserted += result.rowcount
        return inserted

    def upsert_recommendations(
        self, conn: Connection, columns: Mapping[str, Sequence[Any]]
    ) -> None:
        rows = [
            dict(zip(RECOMMENDATION_COLUMNS, values, strict=True))
            for values in zip(*(columns[c] for c in RECOMMENDATION_COLUMNS), strict=True)
        ]
        conn.execute(_UPSERT_RECOMMENDATIONS, {"rows": json_rows(rows)})
