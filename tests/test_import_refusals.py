"""CSV files refused for what only shows late: bytes that are not UTF-8 (reported at their real
line) and a row that passes every check but that the database itself refuses (its line and the
database's reason, exit code 2, no traceback, nothing written)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from recgrpc.cli import main
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.db.queries import count_rows
from recgrpc.jobs.importer import ImportKind, ImportRefused, ImportRefusedByDatabase, import_file

HEADER = "user_id,item_id,type,occurred_at,platform\n"
RETIRED = "retired-platform"


def _events(n: int, bad_at: int | None = None, platform: str = "web") -> str:
    """``n`` interaction rows; the one on file line ``bad_at`` uses the retired platform."""
    rows = [
        f"u{i % 7},i{i % 5},click,{1767225600 + i},{RETIRED if i + 2 == bad_at else platform}\n"
        for i in range(n)
    ]
    return HEADER + "".join(rows)


def _counts(db: Database) -> dict[str, int]:
    with db.reader() as session:
        return {
            model.__tablename__: count_rows(session, model)
            for model in (m.User, m.Item, m.Interaction)
        }


@pytest.fixture
def retired_platform_rule(database: Database) -> Iterator[None]:
    """A rule the database holds and the importer cannot know (as a DBA's CHECK would be)."""
    with database.writer() as session:
        if database.is_sqlite:
            session.execute(
                text(
                    "CREATE TRIGGER no_retired_platform BEFORE INSERT ON interactions "
                    f"WHEN NEW.platform = '{RETIRED}' "
                    "BEGIN SELECT RAISE(ABORT, 'platform retired-platform is retired'); END"
                )
            )
        else:
            session.execute(
                text(
                    "ALTER TABLE interactions ADD CONSTRAINT no_retired_platform "
                    f"CHECK (platform <> '{RETIRED}')"
                )
            )
    yield
    with database.writer() as session:
        if database.is_sqlite:
            session.execute(text("DROP TRIGGER no_retired_platform"))
        else:
            session.execute(text("ALTER TABLE interactions DROP CONSTRAINT no_retired_platform"))


def test_undecodable_bytes_are_reported_at_their_line(database: Database, tmp_path: Path) -> None:
    for bad_line in (3, 4000):  # in the first buffer the reader decodes, and far past it
        path = tmp_path / f"latin1-{bad_line}.csv"
        data = _events(5000).encode().splitlines(keepends=True)
        data[bad_line - 1] = data[bad_line - 1].replace(b"web", b"caf\xe9")
        path.write_bytes(b"".join(data))
        with pytest.raises(ImportRefused) as refused:
            import_file(database, ImportKind.INTERACTIONS, path)
        (problem,) = refused.value.problems
        assert problem.line == bad_line
        assert "not UTF-8" in problem.reason
        assert "0xe9" in problem.reason
    assert _counts(database)["interactions"] == 0


@pytest.mark.usefixtures("retired_platform_rule")
def test_a_row_only_the_database_refuses_gives_its_line_and_reason(
    database_url: str,
    database: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "history.csv"
    path.write_text(_events(40, bad_at=33), encoding="utf-8")
    code = main(["--database-url", database_url, "import", "interactions", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert "line 33: the database refused the row:" in err
    assert "retired" in err  # the database's own words
    assert "nothing was written" in err
    assert _counts(database) == {"users": 0, "items": 0, "interactions": 0}

    # Found in a later batch too, with the batches before it rolled back.
    with pytest.raises(ImportRefusedByDatabase) as refused:
        import_file(database, ImportKind.INTERACTIONS, path, chunk_rows=8)
    assert [p.line for p in refused.value.problems] == [33]
    assert _counts(database) == {"users": 0, "items": 0, "interactions": 0}

    # The same file without that row imports whole.
    path.write_text(_events(40), encoding="utf-8")
    assert main(["--database-url", database_url, "import", "interactions", str(path)]) == 0
    assert _counts(database)["interactions"] == 40
