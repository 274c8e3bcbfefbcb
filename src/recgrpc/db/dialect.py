"""What differs between SQLite and PostgreSQL, behind one interface chosen once per Database.

``Database`` picks the implementation for its URL when it is built (``db.sqlite.SqliteSql`` or
``db.postgres.PostgresSql``) and attaches it to its engines as an execution option, so a query
function finds it on whatever session or connection it is given (:func:`sql_of`) and never asks
for ``dialect.name`` itself. Everything dialect-specific lives in those two modules: expressions
(time buckets, UTC days), locking and durability, and the batch writes, which on PostgreSQL are
one statement taking the whole batch as a JSON document (``db.postgres`` says why).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import URL, Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from recgrpc.db import models as m

EXECUTION_OPTION = "recgrpc_sql"
"""The engine execution option that carries a Database's ``SqlDialect``."""
ORIGIN_OPTION = "recgrpc_origin"
"""The engine execution option naming the Database (one per process) in its announcements, so
a process's change feed skips what the process announced itself (it evicted those already)."""

UserContextRows = tuple[Any, list[Any], list[str], dict[str, float]]
"""(attributes, history newest first as (item_id, type, value, occurred_at), dismissed item ids,
preferences) of one user, as ``SqlDialect.user_context_rows`` reads them."""


class ChangeFeed(Protocol):
    """A running feed of other processes' changes to users' stored context (``db.change_feed``)."""

    def close(self) -> None: ...


class ChangeListener(Protocol):
    """Told by a change feed what other processes changed (``server.context_cache`` is one)."""

    def changed(self, user_ids: Sequence[str]) -> None:
        """These users' stored context changed (their write committed)."""

    def listening(self) -> None:
        """The feed listens (again): changes before now may have gone unannounced."""

    def lost(self) -> None:
        """The feed stopped listening: changes go unannounced until ``listening``."""


def core_connection(executor: Session | Connection) -> Connection:
    """The Core connection behind a session (its transaction's), or the connection itself."""
    return executor if isinstance(executor, Connection) else executor.connection()


def sql_of(executor: Session | Connection) -> SqlDialect:
    """The dialect implementation of the Database that ``executor`` came from."""
    sql: SqlDialect | None = core_connection(executor).get_execution_options().get(EXECUTION_OPTION)
    if sql is None:
        raise RuntimeError("this connection was not opened through recgrpc.db.Database")
    return sql


def origin_of(conn: Connection) -> str:
    """The announcing Database's name (``ORIGIN_OPTION``)."""
    origin: str = conn.get_execution_options().get(ORIGIN_OPTION, "")
    return origin


def insert_for(dialect: str, table: type[m.Base] | Table) -> Any:
    """An INSERT that supports ON CONFLICT, for a SQLAlchemy dialect name.

    For statements compiled once per dialect (``db.prepared``), which are built from the name.
    """
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect {dialect!r}")


class SqlDialect(abc.ABC):
    """One backend's SQL. Methods take the caller's connection and never commit."""

    name: ClassVar[str]
    writer_threads: ClassVar[int]
    """Group-commit writers per kind of write (SQLite has one writer at a time anyway)."""
    autocommit_batches: ClassVar[bool]
    """Whether a group-commit batch is one statement, committed by itself on an autocommit
    connection, rather than several statements in a write transaction."""
    driver_refusals: ClassVar[tuple[type[Exception], ...]] = ()
    """The driver's own exceptions for data the database refuses (a constraint, a type, a
    length), which SQL run on the driver's cursor (``db.prepared``) raises unwrapped by
    SQLAlchemy; ``bulk.refused_by_database`` tells them from an outage or a bug."""

    @abc.abstractmethod
    def configure(self, engine: Engine) -> None:
        """Set up each new connection of ``engine`` (called once per engine by ``Database``)."""

    def insert(self, table: type[m.Base] | Table) -> Any:
        """An INSERT construct with ON CONFLICT clauses."""
        return insert_for(self.name, table)

    @abc.abstractmethod
    def epoch_bucket(
        self, column: InstrumentedAttribute[datetime], seconds: int
    ) -> ColumnElement[Any]:
        """``column`` as whole ``seconds`` since the epoch (UTC): the index of its time bucket."""

    @abc.abstractmethod
    def shifted(self, column: InstrumentedAttribute[datetime], seconds: int) -> ColumnElement[Any]:
        """``column`` moved by ``seconds``, comparable with other time columns."""

    @abc.abstractmethod
    def utc_day(self, column: InstrumentedAttribute[datetime]) -> ColumnElement[Any]:
        """The UTC calendar day of a timestamp."""

    def lock_users(self, conn: Connection, user_ids: Sequence[str]) -> None:  # noqa: B027
        """Serialise writers of these users' stored top-N until the transaction ends."""

    def bulk_load(self, conn: Connection) -> AbstractContextManager[None]:
        """Set-up for a large bulk load (an import), undone when the block ends."""
        return nullcontext()

    def relax_durability(self, conn: Connection) -> None:  # noqa: B027
        """Let this transaction commit without waiting for its flush (recomputable rows)."""

    def refresh_statistics(self, conn: Connection, table: str) -> None:  # noqa: B027
        """Update the planner's statistics of ``table`` before a bulk rewrite of it."""

    def notify_users(self, conn: Connection, user_ids: Sequence[str]) -> None:  # noqa: B027
        """Announce, with this transaction's commit, that these users' stored context changed
        (nothing where the backend has no change feed)."""

    def notify_erased(self, conn: Connection, user_id: str) -> None:
        """Announce, with this transaction's commit, that this user was erased: where the feed
        keeps its announcements in a table, without leaving their id there."""
        self.notify_users(conn, [user_id])

    def user_change_feed(
        self, url: URL, connect_args: Mapping[str, Any], listener: ChangeListener, origin: str
    ) -> ChangeFeed | None:
        """Start telling ``listener`` of announcements by other origins than ``origin``; None
        where the backend has no such feed (caches then rely on expiry alone)."""
        return None

    @abc.abstractmethod
    def insert_new_interactions(
        self, conn: Connection, rows: list[dict[str, Any]], user_ids: list[str], now: datetime
    ) -> set[str]:
        """Store interaction rows (and bare users for ``user_ids``, sorted) whose event_id is
        new, announcing their users (``notify_users``); returns the event_ids stored now."""

    @abc.abstractmethod
    def user_context_rows(
        self, conn: Connection, user_id: str, recent_limit: int
    ) -> UserContextRows | None:
        """One user's stored context, None when the user is unknown."""

    @abc.abstractmethod
    def record_impressions(self, conn: Connection, impressions: Sequence[tuple[Any, ...]]) -> None:
        """Insert the served lists' impressions, each a tuple in ``IMPRESSION_COLUMNS`` order
        (the stored top-N is training's, untouched)."""

    @abc.abstractmethod
    def insert_new(
        self,
        conn: Connection,
        table: type[m.Base],
        rows: Sequence[Mapping[str, Any]],
        key: str,
        chunk_size: int,
    ) -> int:
        """Bulk insert of rows whose ``key`` is not stored yet; returns how many were new."""

    @abc.abstractmethod
    def upsert_recommendations(
        self, conn: Connection, columns: Mapping[str, Sequence[Any]]
    ) -> None:
        """Write stored top-N rows given column by column (``RECOMMENDATION_COLUMNS`` keys,
        equal lengths); a stored (user_id, item_id) is updated."""


IMPRESSION_COLUMNS = (
    "recset_id", "user_id", "algorithm", "model_version", "fallback_reason", "item_ids",
    "platform", "served_at",
)  # fmt: skip
"""The columns of an impression, in the order ``record_impressions`` takes them."""

RECOMMENDATION_COLUMNS = (
    "user_id", "item_id", "rank", "score", "algorithm", "model_version", "recset_id",
    "generated_at", "is_clicked", "is_dismissed",
)  # fmt: skip
"""The columns of a stored top-N row, in the order the upsert lists them."""


def recommendations_upsert(source: str, order_by: str = "") -> str:
    """THE upsert of stored top-N rows (both backends, every writer), reading ``source``: a
    FROM clause giving ``RECOMMENDATION_COLUMNS`` by name, in ``order_by`` order if given.
    ``WHERE true`` is SQLite's way of telling the SELECT from the ON CONFLICT clause."""
    columns = ", ".join(RECOMMENDATION_COLUMNS)
    updates = ", ".join(
        f"{c} = excluded.{c}" for c in RECOMMENDATION_COLUMNS if c not in ("user_id", "item_id")
    )
    return (
        f"INSERT INTO recommendations ({columns})\n"
        f"SELECT {columns} FROM {source} WHERE true"
        + (f" ORDER BY {order_by}\n" if order_by else "\n")
        + f"ON CONFLICT (user_id, item_id) DO UPDATE SET {updates}"
    )
