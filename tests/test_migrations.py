"""Migrations build exactly the schema the models describe, on every backend under test."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from recgrpc.cli import main
from recgrpc.db import Database
from recgrpc.db.models import Base


def test_migrated_schema_matches_models(database: Database) -> None:
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrate_command_creates_every_table_and_is_rerunnable(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert main(["--database-url", url, "migrate"]) == 0
    assert main(["--database-url", url, "migrate"]) == 0
    assert "up to date" in capsys.readouterr().out
    db = Database(url)
    try:
        tables = set(inspect(db.engine).get_table_names())
    finally:
        db.dispose()
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
