"""SQLite's SQL (``SqlDialect``): the embedded default, one writer at a time, UTC stored as text.

Batches are plain multi-row statements: SQLite runs in process, so there is no round trip to
save, only SQLAlchemy's per-row bookkeeping, which the compiled statements of ``db.prepared``
and the driver's executemany skip.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    URL,
    BindParameter,
    Connection,
    Engine,
    Float,
    Integer,
    bindparam,
    cast,
    delete,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from recgrpc.db import models as m
from recgrpc.db.dialect import (
    IMPRESSION_COLUMNS,
    RECOMMENDATION_COLUMNS,
    ChangeListener,
    SqlDialect,
    UserContextRows,
    insert_for,
    origin_of,
    recommendations_upsert,
)
from recgrpc.db.prepared import Prepared, PreparedInsert
from recgrpc.db.rows import INTERACTION_COLUMNS, table_of
from recgrpc.db.sqlite_feed import KEEP_SECONDS, SqliteChangeFeed

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
_ENSURE_USERS = PreparedInsert(
    lambda dialect: insert_for(dialect, m.User).on_conflict_do_nothing(index_elements=["user_id"]),
    ("user_id", "attributes", "created_at", "updated_at"),
)
# RETURNING says reliably which rows were new (a multi-row rowcount would not say which).
_INSERT_NEW_INTERACTIONS = PreparedInsert(
    lambda dialect: (
        insert_for(dialect, m.Interaction)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(table_of(m.Interaction).c.event_id)
    ),
    INTERACTION_COLUMNS,
)
_RECOMMENDATIONS = table_of(m.Recommendation)
# One row's INSERT, run by the driver's executemany: compiled once, whatever the batch's size
# (a multi-row statement is compiled per row count, and SQLite has no round trip to save).
_INSERT_IMPRESSION = Prepared(
    insert(table_of(m.Impression)).values({c: bindparam(c) for c in IMPRESSION_COLUMNS})
)
# The one recommendations upsert, from one row of positional parameters per execution.
_UPSERT_ROW = recommendations_upsert(
    "(SELECT " + ", ".join(f"? AS {c}" for c in RECOMMENDATION_COLUMNS) + ")"
)
# The change feed (db.sqlite_feed): one row per changed user, in the writer's transaction, and
# the oldest rows trimmed a few at a time (only among the oldest, so no scan of the table).
_CHANGED_USERS = table_of(m.ChangedUser)
_ANNOUNCE = Prepared(
    insert(_CHANGED_USERS).values({c: bindparam(c) for c in ("user_id", "origin", "changed_at")})
)
_FORGET_ANNOUNCED = Prepared(
    delete(_CHANGED_USERS).where(_CHANGED_USERS.c.user_id == bindparam("user_id"))
)
_TRIM = Prepared(
    text(
        "DELETE FROM changed_users WHERE seq IN (SELECT seq FROM (SELECT seq, changed_at"
        " FROM changed_users ORDER BY seq LIMIT :rows) WHERE changed_at < :before)"
    ).bindparams(bindparam("rows", type_=Integer()), bindparam("before", type_=Float()))
)
_UPSERT_BATCH_ROWS = 50_000
BULK_LOAD_CACHE_KIB = 256 * 1024
"""SQLite page cache during a bulk load (the default is 2 MB)."""


class SqliteSql(SqlDialect):
    name: ClassVar[str] = "sqlite"
    autocommit_batches: ClassVar[bool] = False
    writer_threads: ClassVar[int] = 1

    def configure(self, engine: Engine) -> None:
        """Foreign keys, WAL and ``BEGIN IMMEDIATE`` for write transactions (``Database``)."""

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself (pysqlite's implicit BEGIN ignores our choice).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("recgrpc_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @contextmanager
    def bulk_load(self, conn: Connection) -> Iterator[None]:
        # A bigger page cache: index inserts of a large file otherwise thrash the default 2 MB
        # cache (bench/import_speed.py).
        previous = conn.execute(text("PRAGMA cache_size")).scalar_one()
        conn.execute(text(f"PRAGMA cache_size = -{BULK_LOAD_CACHE_KIB}"))
        try:
            yield
        finally:
            conn.execute(text(f"PRAGMA cache_size = {int(previous)}"))

    def epoch_bucket(
        self, column: InstrumentedAttribute[datetime], seconds: int
    ) -> ColumnElement[Any]:
        # SQLite stores UTC text; strftime('%s') gives epoch seconds.
        return cast(func.strftime("%s", column), Integer) // seconds

    def shifted(self, column: InstrumentedAttribute[datetime], seconds: int) -> ColumnElement[Any]:
        # UTC text without the fraction; compares correctly with the stored text.
        return func.datetime(column, f"{seconds:+d} seconds")

    def utc_day(self, column: InstrumentedAttribute[datetime]) -> ColumnElement[Any]:
        return func.date(column)  # the stored text is naive UTC

    def insert_new_interactions(
        self, conn: Connection, rows: list[dict[str, Any]], user_ids: list[str], now: datetime
    ) -> set[str]:
        users = [
            {"user_id": uid, "attributes": {}, "created_at": now, "updated_at": now}
            for uid in user_ids
        ]
        _ENSURE_USERS.insert(conn, users)
        for row in rows:
            row["received_at"] = now
        stored = {event_id for (event_id,) in _INSERT_NEW_INTERACTIONS.insert(conn, rows)}
        self.notify_users(conn, sorted({r["user_id"] for r in rows if r["event_id"] in stored}))
        return stored

    def notify_users(self, conn: Connection, user_ids: Sequence[str]) -> None:
        if not user_ids:
            return
        origin, now = origin_of(conn), time.time()
        count = len(user_ids)
        _ANNOUNCE.execute_columns(
            conn, {"user_id": user_ids, "origin": [origin] * count, "changed_at": [now] * count}
        )
        _TRIM.execute(conn, {"rows": 2 * count + 16, "before": now - KEEP_SECONDS})

    def notify_erased(self, conn: Connection, user_id: str) -> None:
        # The table must not keep the erased id: their earlier announcements go, and the
        # erasure is announced as a row without a user, which makes every other process
        # forget all its cached contexts (erasures are rare; a cache refills in a call each).
        _FORGET_ANNOUNCED.execute(conn, {"user_id": user_id})
        origin, now = origin_of(conn), time.time()
        _ANNOUNCE.execute(conn, {"user_id": None, "origin": origin, "changed_at": now})

    def user_change_feed(
        self, url: URL, connect_args: Mapping[str, Any], listener: ChangeListener, origin: str
    ) -> SqliteChangeFeed | None:
        database = url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None  # a private in-memory database (or a URI): no other process shares it
        return SqliteChangeFeed(database, listener, origin)

    def user_context_rows(
        self, conn: Connection, user_id: str, recent_limit: int
    ) -> UserContextRows | None:
        params = {"user_id": user_id}
        found = _USER_ATTRIBUTES.rows(conn, params)
        if not found:
            return None
        history = _HISTORY.rows(conn, params, convert=recent_limit)
        dismissed = [item_id for (item_id,) in _DISMISSED_ITEMS.rows(conn, params)]
        return found[0][0], history, dismissed, dict(_PREFERENCES.rows(conn, params))

    def record_impressions(self, conn: Connection, impressions: Sequence[tuple[Any, ...]]) -> None:
        if impressions:
            columns = zip(*impressions, strict=True)
            _INSERT_IMPRESSION.execute_columns(
                conn, dict(zip(IMPRESSION_COLUMNS, columns, strict=True))
            )

    def insert_new(
        self,
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
        core = table_of(table)
        stmt = (
            self.insert(table)
            .values({c: bindparam(c) for c in columns})
            .on_conflict_do_nothing(index_elements=[key])
        )
        compiled = stmt.compile(dialect=conn.dialect)
        order = list(compiled.positiontup or ())
        processors = [core.c[c].type.bind_processor(conn.dialect) for c in order]
        sql = str(compiled)
        inserted = 0
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
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

    def upsert_recommendations(
        self, conn: Connection, columns: Mapping[str, Sequence[Any]]
    ) -> None:
        # The driver's executemany over plain tuples, times converted by the column's own
        # processor (SQLAlchemy's per-row parameter processing would dominate millions of rows).
        stamp = _RECOMMENDATIONS.c.generated_at.type.dialect_impl(conn.dialect).bind_processor(
            conn.dialect
        )
        data = {k: list(v) for k, v in columns.items()}
        times = data["generated_at"]
        if stamp is not None and times:
            if times.count(times[0]) == len(times):  # one training run: convert once
                data["generated_at"] = [stamp(times[0])] * len(times)
            else:
                data["generated_at"] = [stamp(t) for t in times]
        params = list(zip(*(data[c] for c in RECOMMENDATION_COLUMNS), strict=True))
        for begin in range(0, len(params), _UPSERT_BATCH_ROWS):
            conn.exec_driver_sql(_UPSERT_ROW, params[begin : begin + _UPSERT_BATCH_ROWS])
