"""Engine and session factory. Callers own session lifecycles: ``with db.reader() as s:``."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from recgrpc.config import Settings
from recgrpc.db.dialect import (
    EXECUTION_OPTION,
    ORIGIN_OPTION,
    ChangeFeed,
    ChangeListener,
    SqlDialect,
)
from recgrpc.db.postgres import PostgresSql
from recgrpc.db.sqlite import SqliteSql

SQLITE: SqlDialect = SqliteSql()
POSTGRES: SqlDialect = PostgresSql()


def normalise_url(url: str) -> URL:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


@dataclass(frozen=True, slots=True)
class ConnectionBudgets:
    """How long a PostgreSQL connection may wait, from ``Settings`` (the README's Operations
    section explains each). Statement-level limits (0: none) are for the server's connections:
    training and imports run long statements on purpose."""

    connect_timeout: int
    pool_timeout: float
    keepalive_seconds: int
    tcp_user_timeout: float
    statement_timeout: float = 0.0
    lock_timeout: float = 0.0
    idle_in_transaction_timeout: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, *, server: bool) -> ConnectionBudgets:
        transport = cls(
            connect_timeout=settings.db_connect_timeout_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
            keepalive_seconds=settings.db_keepalive_seconds,
            tcp_user_timeout=settings.db_tcp_user_timeout_seconds,
        )
        if not server:
            return transport
        return cls(
            transport.connect_timeout,
            transport.pool_timeout,
            transport.keepalive_seconds,
            transport.tcp_user_timeout,
            statement_timeout=settings.db_statement_timeout_seconds,
            lock_timeout=settings.db_lock_timeout_seconds,
            idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout_seconds,
        )

    def connect_args(self) -> dict[str, Any]:
        """libpq connection parameters (psycopg passes them through)."""
        args: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "keepalives": 1,
            "keepalives_idle": self.keepalive_seconds,
            "keepalives_interval": max(1, math.ceil(self.keepalive_seconds / 3)),
            "keepalives_count": 3,
        }
        if self.tcp_user_timeout > 0:
            args["tcp_user_timeout"] = int(self.tcp_user_timeout * 1000)
        limits = {
            "statement_timeout": self.statement_timeout,
            "lock_timeout": self.lock_timeout,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_timeout,
        }
        options = [f"-c {name}={int(s * 1000)}" for name, s in limits.items() if s > 0]
        if options:
            args["options"] = " ".join(options)
        return args


class Database:
    """One engine per process (two pools on PostgreSQL), with read and write session factories.

    On SQLite, write transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue on
    the busy timeout instead of failing when a deferred transaction tries to upgrade its lock.
    The backend's SQL (``db.dialect``) is chosen here, once, as ``sql``.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        budgets: ConnectionBudgets | None = None,
    ) -> None:
        self.url = normalise_url(url)
        if budgets is None:
            budgets = ConnectionBudgets.from_settings(Settings(), server=False)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.url.get_backend_name() == "sqlite":
            # A local file cannot drop a connection, so no liveness ping per checkout.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # No liveness ping per checkout: it is a round trip on every request. A connection
            # the server dropped fails its next statement instead; that request answers
            # UNAVAILABLE (or serves the fallback), and the whole pool is marked stale so the
            # following requests reconnect (SQLAlchemy's disconnect handling, and
            # ``db.prepared`` for the statements it runs).
            kwargs.update(
                pool_size=pool_size, max_overflow=pool_size, pool_timeout=budgets.pool_timeout
            )
            kwargs["connect_args"] = budgets.connect_args()
        self._connect_args: dict[str, Any] = kwargs.get("connect_args", {})
        self.sql: SqlDialect = SQLITE if self.is_sqlite else POSTGRES
        # Names this Database's announcements of changed users (db.change_feed).
        self.origin = secrets.token_hex(4)
        options = {EXECUTION_OPTION: self.sql, ORIGIN_OPTION: self.origin}
        engine = create_engine(self.url, **kwargs)
        self.sql.configure(engine)
        self.engine: Engine = engine.execution_options(**options)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        # Autocommit: no BEGIN and ROLLBACK round trips around a few reads. On PostgreSQL a pool
        # of its own whose connections are put in autocommit once, when opened: switching a
        # shared pool's connection on every checkout and back on every return cost a visible share
        # of LogInteraction's CPU per event (bench/group_commit.py). Each pool opens connections
        # only as concurrent calls need them, up to pool_size (doubled by overflow).
        if self.is_sqlite:
            self._autocommit: Engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            autocommit = create_engine(
                self.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None, **kwargs
            )
            self.sql.configure(autocommit)
            self._autocommit = autocommit.execution_options(**options)
        self._immediate = self.engine.execution_options(recgrpc_immediate=True)
        self._writer = sessionmaker(self._immediate, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session for reads; rolled back at the end."""
        with self._reader() as session:
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A bare Core connection for the per-request reads (``queries.load_user_context``).

        No ORM session and no transaction (autocommit): each statement sees what was committed
        before it ran.
        """
        with self.autocommit_connection() as connection:
            yield connection

    def autocommit_connection(self) -> Connection:
        """An autocommit connection the caller closes (``connection`` for a ``with`` block)."""
        return self._autocommit.connect()

    @contextmanager
    def writer(self) -> Iterator[Session]:
        """A session in a transaction that commits when the block ends without error."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """``writer`` without the ORM: a Core connection in a write transaction.

        For the group-commit writers, whose few Core statements cost less than a session's
        bookkeeping around them.
        """
        with self._immediate.begin() as connection:
            yield connection

    @property
    def writer_threads(self) -> int:
        """Group-commit writers per kind of write this backend benefits from."""
        return self.sql.writer_threads

    @property
    def autocommit_batches(self) -> bool:
        """Whether a group-commit batch is one statement, its own transaction on an autocommit
        connection (PostgreSQL), rather than several in a write transaction (SQLite)."""
        return self.sql.autocommit_batches

    def change_feed(self, listener: ChangeListener) -> ChangeFeed | None:
        """Start telling ``listener`` which users other processes changed (PostgreSQL's
        LISTEN/NOTIFY, ``db.change_feed``; SQLite's polled table, ``db.sqlite_feed``); None for
        an in-memory SQLite database, which no other process shares."""
        return self.sql.user_change_feed(self.url, self._connect_args, listener, self.origin)

    def dispose(self) -> None:
        self.engine.dispose()
        self._autocommit.dispose()
