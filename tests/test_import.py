"""CSV import: every kind, idempotent re-runs, and refusal of files with bad rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from recgrpc.cli import main
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.db.queries import count_rows
from recgrpc.jobs.importer import ImportKind, ImportRefused, import_file, parse_time

HISTORY = """user_id,item_id,type,value,occurred_at
alice,book-1,click,,2026-01-02T10:00:00Z
alice,book-2,RATING,4.5,1767225600
bob,book-1,View,0,2026-01-03 10:00:00
bob,book-3,purchase,,2026-01-04T12:30:00+02:00
carol,book-2,interaction_type_like,,1767225600.5
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _all_counts(db: Database) -> dict[str, int]:
    with db.reader() as session:
        return {
            model.__tablename__: count_rows(session, model)
            for model in (m.Item, m.User, m.Preference, m.Interaction)
        }


def test_parse_time_reads_iso_and_unix_seconds() -> None:
    expected = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("2026-01-01T00:00:00Z") == expected
    assert parse_time("2026-01-01 00:00:00") == expected  # no zone: UTC
    assert parse_time("2026-01-01T02:00:00+02:00") == expected
    assert parse_time("1767225600") == expected
    assert parse_time(" 1767225600.0 ") == expected
    assert parse_time("yesterday") is None
    assert parse_time("") is None


def test_interactions_import_creates_missing_users_and_items_and_reruns_idempotently(
    database: Database, tmp_path: Path
) -> None:
    path = _write(tmp_path, "history.csv", HISTORY)
    report = import_file(database, ImportKind.INTERACTIONS, path)
    assert (report.rows, report.new_rows) == (5, 5)
    assert (report.created_users, report.created_items) == (3, 3)
    with database.reader() as session:
        stored = session.execute(
            select(
                m.Interaction.user_id,
                m.Interaction.item_id,
                m.Interaction.type,
                m.Interaction.value,
                m.Interaction.occurred_at,
            ).order_by(m.Interaction.user_id, m.Interaction.item_id)
        ).all()
        bare_item = session.get(m.Item, "book-3")
    assert [tuple(r) for r in stored] == [
        ("alice", "book-1", "CLICK", 0.0, datetime(2026, 1, 2, 10, tzinfo=UTC)),
        ("alice", "book-2", "RATING", 4.5, datetime(2026, 1, 1, tzinfo=UTC)),
        ("bob", "book-1", "VIEW", 0.0, datetime(2026, 1, 3, 10, tzinfo=UTC)),
        ("bob", "book-3", "PURCHASE", 0.0, datetime(2026, 1, 4, 10, 30, tzinfo=UTC)),
        ("carol", "book-2", "LIKE", 0.0, datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)),
    ]
    assert bare_item is not None
    assert bare_item.categories == []
    before = _all_counts(database)
    again = import_file(database, ImportKind.INTERACTIONS, path)
    assert (again.rows, again.new_rows, again.created_users, again.created_items) == (5, 0, 0, 0)
    assert _all_counts(database) == before


def test_given_event_ids_are_kept_and_chunked_writes_store_everything(
    database: Database, tmp_path: Path
) -> None:
    lines = ["event_id,user_id,item_id,type,occurred_at"]
    lines += [f"ev-{n},user-{n % 7},item-{n % 11},click,{1767225600 + n}" for n in range(50)]
    path = _write(tmp_path, "events.csv", "\n".join(lines) + "\n")
    report = import_file(database, "interactions", path, chunk_rows=8)
    assert (report.new_rows, report.created_users, report.created_items) == (50, 7, 11)
    with database.reader() as session:
        ids = set(session.scalars(select(m.Interaction.event_id)))
    assert ids == {f"ev-{n}" for n in range(50)}
    assert import_file(database, "interactions", path, chunk_rows=8).new_rows == 0


def test_items_import_splits_lists_keeps_extra_columns_and_updates(
    database: Database, tmp_path: Path
) -> None:
    path = _write(
        tmp_path,
        "items.csv",
        "item_id,title,categories,tags,created_at,format\n"
        "book-1,Dune,sci-fi|classic,space| desert ,2025-06-01T00:00:00Z,paperback\n"
        'book-2,"Cooking, Simply",cooking,,,\n',
    )
    report = import_file(database, ImportKind.ITEMS, path)
    assert (report.rows, report.new_rows) == (2, 2)
    with database.reader() as session:
        dune = session.get(m.Item, "book-1")
        cooking = session.get(m.Item, "book-2")
    assert dune is not None
    assert cooking is not None
    assert (dune.title, dune.categories, dune.tags) == (
        "Dune",
        ["sci-fi", "classic"],
        ["space", "desert"],
    )
    assert dune.created_at == datetime(2025, 6, 1, tzinfo=UTC)
    assert dune.attributes == {"format": "paperback"}
    assert (cooking.title, cooking.categories, cooking.tags, cooking.attributes) == (
        "Cooking, Simply",
        ["cooking"],
        [],
        {},
    )
    assert import_file(database, ImportKind.ITEMS, path).new_rows == 0
    # A changed file updates the catalogue; an item without created_at keeps its date.
    changed = _write(
        tmp_path, "items2.csv", "item_id,title,categories\nbook-1,Dune (2nd ed.),sci-fi\n"
    )
    import_file(database, ImportKind.ITEMS, changed)
    with database.reader() as session:
        dune = session.get(m.Item, "book-1")
        assert count_rows(session, m.Item) == 2
    assert dune is not None
    assert (dune.title, dune.categories) == ("Dune (2nd ed.)", ["sci-fi"])
    assert dune.created_at == datetime(2025, 6, 1, tzinfo=UTC)


def test_users_and_preferences_import(database: Database, tmp_path: Path) -> None:
    users = _write(tmp_path, "users.csv", "user_id,country,plan\nalice,FR,pro\nbob,,free\n")
    assert import_file(database, ImportKind.USERS, users).new_rows == 2
    prefs = _write(
        tmp_path,
        "prefs.csv",
        "user_id,category,score\nalice,jazz,1.0\nalice,cooking,0.25\ndave,hiking,3\n",
    )
    report = import_file(database, ImportKind.PREFERENCES, prefs)
    assert (report.rows, report.new_rows, report.created_users) == (3, 3, 1)
    assert import_file(database, ImportKind.USERS, users).new_rows == 0
    again = import_file(database, ImportKind.PREFERENCES, prefs)
    assert (again.new_rows, again.created_users) == (0, 0)
    update = _write(tmp_path, "prefs2.csv", "user_id,category,score\nalice,jazz,0.5\n")
    import_file(database, ImportKind.PREFERENCES, update)
    with database.reader() as session:
        alice = session.get(m.User, "alice")
        bob = session.get(m.User, "bob")
        scores = dict(
            session.execute(
                select(m.Preference.category, m.Preference.score).where(
                    m.Preference.user_id == "alice"
                )
            ).all()
        )
        assert count_rows(session, m.User) == 3
        assert count_rows(session, m.Preference) == 3
    assert alice is not None
    assert bob is not None
    assert alice.attributes == {"country": "FR", "plan": "pro"}
    assert bob.attributes == {"plan": "free"}  # empty cells are left out
    assert scores == {"jazz": 0.5, "cooking": 0.25}


BAD_HISTORY = (
    "user_id,item_id,type,value,occurred_at\n"
    "alice,book-1,click,,2026-01-02T10:00:00Z\n"  # 2: fine
    f"{'x' * 129},book-1,click,,2026-01-02T10:00:00Z\n"  # 3: id too long
    "alice,book\x07,click,,2026-01-02T10:00:00Z\n"  # 4: not printable
    "alice,book-1,clack,,2026-01-02T10:00:00Z\n"  # 5: unknown type
    "alice,book-1,rating,5.5,2026-01-02T10:00:00Z\n"  # 6: rating beyond the 0.5-5 stars
    "alice,book-1,view,nan,2026-01-02T10:00:00Z\n"  # 7: not finite
    "alice,book-1,view,,-62135596801\n"  # 8: before year 1
    "alice,book-1,view,,2099-01-01T00:00:00Z\n"  # 9: future
    "alice,book-1,view,,1767225600000\n"  # 10: milliseconds
    "alice,book-1,view\n"  # 11: too few fields
    "bob,book-9,view,,soon\n"  # 12: not a time
    "bob,book-9,view,,1767225600\n"  # 13: fine
)


def test_a_file_with_bad_rows_is_refused_whole_with_line_numbers(
    database: Database, tmp_path: Path
) -> None:
    import_file(database, ImportKind.INTERACTIONS, _write(tmp_path, "ok.csv", HISTORY))
    before = _all_counts(database)
    path = _write(tmp_path, "bad.csv", BAD_HISTORY)
    with pytest.raises(ImportRefused) as refused:
        import_file(database, ImportKind.INTERACTIONS, path)
    assert refused.value.bad_rows == 10
    found = {(p.line, p.column) for p in refused.value.problems}
    assert found == {
        (3, "user_id"),
        (4, "item_id"),
        (5, "type"),
        (6, "value"),
        (7, "value"),
        (8, "occurred_at"),
        (9, "occurred_at"),
        (10, "occurred_at"),
        (11, ""),
        (12, "occurred_at"),
    }
    reasons = {p.line: p.reason for p in refused.value.problems}
    assert "at most 128" in reasons[3]
    assert "printable" in reasons[4]
    assert "clack" in reasons[5]
    assert "from 0.5 to 5" in reasons[6]
    assert "before year 1" in reasons[8]
    assert "future" in reasons[9]
    assert "milliseconds" in reasons[10]
    assert "fields" in reasons[11]
    # Nothing was written: not the good rows, not the users and items they mention.
    assert _all_counts(database) == before


def test_bad_headers_and_repeated_keys_are_refused(database: Database, tmp_path: Path) -> None:
    cases = {
        "interactions": "user_id,item_id,kind,occurred_at\nu,i,click,1767225600\n",
        "preferences": "user_id,category\nu,jazz\n",
        "items": "item_id,title\nbook-1,A\nbook-2,B\nbook-1,C\n",
        "users": "",
    }
    expected = {
        "interactions": {(1, "kind"), (1, "type")},
        "preferences": {(1, "score")},
        "items": {(4, "")},
        "users": {(1, "")},
    }
    for kind, text in cases.items():
        with pytest.raises(ImportRefused) as refused:
            import_file(database, kind, _write(tmp_path, f"{kind}.csv", text))
        assert {(p.line, p.column) for p in refused.value.problems} == expected[kind], kind
    assert _all_counts(database) == {"items": 0, "users": 0, "preferences": 0, "interactions": 0}


def test_import_command_end_to_end(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path, "history.csv", HISTORY)
    bad = _write(tmp_path, "bad.csv", BAD_HISTORY)
    base = ["--database-url", database_url, "import"]
    assert main([*base, "interactions", str(good), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "imported 5 rows of interactions" in out
    assert "5 new; created 3 users and 3 items" in out
    assert main([*base, "interactions", str(good), "--quiet"]) == 0
    assert "0 new" in capsys.readouterr().out
    assert main([*base, "interactions", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "10 bad row(s); nothing was written" in err
    assert "line 3, column user_id" in err
    assert "line 12, column occurred_at" in err
    assert main([*base, "items", str(tmp_path / "missing.csv")]) == 2
    db = Database(database_url)
    try:
        assert _all_counts(db)["interactions"] == 5
    finally:
        db.dispose()
