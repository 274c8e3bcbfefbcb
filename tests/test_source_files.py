"""The file rules of DEVELOPERS.md, checked on the tree: no source file over 400 lines outside
generated code and migrations, and each opens with a one-line docstring or comment."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
GENERATED = (ROOT / "src" / "recgrpc" / "v1", ROOT / "src" / "recgrpc" / "db" / "migrations")
"""protoc's output and Alembic's migrations, which are written once and not split."""


def _sources() -> list[Path]:
    files = [p for top in ("src", "tests", "bench") for p in (ROOT / top).rglob("*.py")]
    return sorted(p for p in files if not any(p.is_relative_to(g) for g in GENERATED))


def _opening(line: str) -> str:
    """The text a first line says, after its docstring quotes or comment sign."""
    for mark in ('"""', "'''", "#"):
        if line.startswith(mark):
            return line[len(mark) :].strip(" \"'")
    return ""


def test_the_rules_see_the_whole_tree() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _sources()}
    assert "src/recgrpc/server/app.py" in names
    assert "tests/conftest.py" in names
    assert not any("/v1/" in n or "/migrations/" in n for n in names)


def test_no_source_file_is_over_the_line_limit() -> None:
    long = {}
    for path in _sources():
        with path.open(encoding="utf-8") as f:
            count = sum(1 for _ in f)
        if count > MAX_LINES:
            long[path.relative_to(ROOT).as_posix()] = count
    assert long == {}, f"split by responsibility: over {MAX_LINES} lines"


def test_every_source_file_opens_by_saying_what_it_is() -> None:
    silent = []
    for path in _sources():
        with path.open(encoding="utf-8") as f:
            first = f.readline()
        if not _opening(first):
            silent.append(path.relative_to(ROOT).as_posix())
    assert silent == []
