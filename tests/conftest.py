"""Shared fixtures: real databases (SQLite and PostgreSQL) and a real gRPC server on a free
loopback port.

PostgreSQL is ``RECGRPC_TEST_DATABASE_URL`` when set (CI sets it and fails without it).
Otherwise, when a PostgreSQL on this machine's default port lets user ``postgres`` in, the run
creates a database of its own there and drops it at the end, so a plain ``make test`` runs every
PostgreSQL-only statement too; when none is reachable, every PostgreSQL case is skipped, each
with the reason, and the report header says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from sqlalchemy import text

from recgrpc.config import Settings
from recgrpc.db import Database, upgrade
from recgrpc.db.models import Base
from recgrpc.server import RunningServer, create_server

LOCAL_POSTGRES = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


def _local_postgres() -> tuple[str, str, str]:
    """(url, database this run created, why PostgreSQL is not tested) for a local server."""
    name = f"recgrpc_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(LOCAL_POSTGRES, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a fresh name: nothing to drop first
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (
            "",
            "",
            (
                f"PostgreSQL NOT TESTED: none reachable at 127.0.0.1:5432 ({reason}); "
                "set RECGRPC_TEST_DATABASE_URL to a database to test it"
            ),
        )
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name, ""


POSTGRES_URL = os.environ.get("RECGRPC_TEST_DATABASE_URL", "")
CREATED_DATABASE, POSTGRES_SKIPPED = "", ""
if not POSTGRES_URL:
    POSTGRES_URL, CREATED_DATABASE, POSTGRES_SKIPPED = _local_postgres()
BACKENDS = ["sqlite", "postgresql"]


def pytest_report_header() -> str:
    if POSTGRES_SKIPPED:
        return POSTGRES_SKIPPED
    made = f" (created for this run: {CREATED_DATABASE})" if CREATED_DATABASE else ""
    return f"PostgreSQL: {POSTGRES_URL}{made}"


def pytest_unconfigure() -> None:
    if CREATED_DATABASE:
        with psycopg.connect(LOCAL_POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {CREATED_DATABASE} WITH (FORCE)")


@pytest.fixture(autouse=True, scope="session")
def _dashboard_port_off() -> Iterator[None]:
    """Servers that tests start (``recgrpc serve`` too) leave the dashboard's default port
    alone: suites run side by side on one machine. Dashboard tests pick a free port."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECGRPC_DASHBOARD_PORT", "0")
        yield


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A CLI command run in-process points logging at this test's captured stderr, which is
    closed after it: later tests (and server threads still winding down) must not write there."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# Tests share two CPUs with other suites, where a thread can wait longer than the server's
# default database budget (half a second) for the interpreter alone: every call would then
# look like a stalled database. Servers started by tests get a generous budget; the tests of
# the budget itself (test_db_stall, test_faults) set theirs.
TEST_DB_DEADLINE_SECONDS = 10.0


@pytest.fixture(autouse=True, scope="session")
def _generous_database_budget() -> Iterator[None]:
    """The same for servers that tests start as processes (``recgrpc serve``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECGRPC_DB_DEADLINE_SECONDS", str(TEST_DB_DEADLINE_SECONDS))
        yield


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied per test (migrating each time would be slow)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_migrated() -> str:
    if not POSTGRES_URL:
        pytest.skip(POSTGRES_SKIPPED)
    upgrade(POSTGRES_URL)
    return POSTGRES_URL


def _truncate_postgres(url: str) -> None:
    db = Database(url)
    try:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with db.writer() as session:
            session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        db.dispose()


def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str
) -> str:
    """A freshly migrated, empty database on ``request.param``'s backend, for module-scoped
    fixtures parametrized by ``BACKENDS`` (a whole module's tests share what they build)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp(name) / f"{name}.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_migrated")
    _truncate_postgres(url)
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated, empty database on each backend under test."""
    if request.param == "sqlite":
        path = tmp_path / "recgrpc.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_migrated")
    _truncate_postgres(url)
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Short refresh so trending picks up new events within a test.
    return Settings(
        database_url=database_url,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        refresh_seconds=0.5,
        db_deadline_seconds=TEST_DB_DEADLINE_SECONDS,
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[RunningServer]:
    running = create_server(settings)
    assert running.wait_ready(30), "server never became ready"
    yield running
    running.stop(grace=1)


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch
