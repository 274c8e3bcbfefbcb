"""Bulk CSV import: ``recgrpc import items|users|preferences|interactions FILE.csv``.

Formats (a header row names the columns, in any order):

- interactions: ``user_id,item_id,type,occurred_at`` plus optional ``value`` (empty -> 0),
  ``event_id``, ``content_type``, ``platform``, ``recset_id``. ``type`` is a short interaction
  type name in any case (``click``, ``RATING``); ``occurred_at`` is ISO-8601 (no zone = UTC) or
  Unix seconds. Without an event_id, one is derived from the row's content, so re-importing a
  file adds nothing and identical rows are one event.
- items: ``item_id`` plus optional ``title``, ``categories`` and ``tags`` (``|``-separated),
  ``created_at`` and ``active``; any other column becomes an attribute.
- users: ``user_id``; every other column becomes an attribute (empty cells are left out).
- preferences: ``user_id,category,score``; each (user, category) is set, other categories kept.

Every row is checked with the rules the gRPC API applies (``recgrpc.validation``) before anything
is written. A file with any bad row is refused whole, with line numbers and reasons. Valid files
are written in one transaction with chunked bulk inserts; users and items that rows refer to but
the database lacks are created bare (and counted), since history files often come without their
catalogue. The file is read twice (check, then write) so memory stays flat for large histories.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.orm import Session
from tqdm import tqdm

from recgrpc import validation
from recgrpc.config import Settings
from recgrpc.db import bulk
from recgrpc.db import models as m
from recgrpc.db.dialect import sql_of
from recgrpc.db.engine import Database
from recgrpc.db.serving import notify_changed
from recgrpc.domain import utcnow
from recgrpc.jobs.import_rows import (
    FORMATS,
    MAX_REPORTED_PROBLEMS,
    CheckedEvent,
    ImportKind,
    ImportRefused,
    ImportRefusedByDatabase,
    ImportReport,
    RowCheck,
    RowProblem,
    derived_event_id,
    parse_time,
)

__all__ = [
    "ImportKind",
    "ImportRefused",
    "ImportRefusedByDatabase",
    "ImportReport",
    "check_file",
    "import_file",
    "parse_time",
]

# -- reading --------------------------------------------------------------------------------------


def _header_problems(kind: ImportKind, header: list[str]) -> list[RowProblem]:
    spec = FORMATS[kind]
    problems = []
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.append(RowProblem(1, name, "column appears twice in the header"))
        seen.add(name)
        if not name:
            problems.append(RowProblem(1, "", "the header has an empty column name"))
        elif not spec.extra_columns_are_attributes and name not in spec.required + spec.optional:
            known = ", ".join(spec.required + spec.optional)
            problems.append(RowProblem(1, name, f"unknown column for {kind} (known: {known})"))
    for name in spec.required:
        if name not in seen:
            problems.append(RowProblem(1, name, f"required column missing for {kind}"))
    return problems


def _records(
    stream: TextIO, kind: ImportKind
) -> Iterator[tuple[int, dict[str, str] | None, list[RowProblem]]]:
    """(line, row or None, problems) per data row; a bad header yields only its problems."""
    reader = csv.reader(stream)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        yield 1, None, [RowProblem(1, "", "the file is empty (a header row is required)")]
        return
    problems = _header_problems(kind, header)
    if problems:
        yield 1, None, problems
        return
    width = len(header)
    for fields in reader:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        line = reader.line_num
        if len(fields) != width:
            reason = f"has {len(fields)} fields but the header has {width}"
            yield line, None, [RowProblem(line, "", reason)]
            continue
        yield line, dict(zip(header, fields, strict=True)), []


def _parsed(
    path: Path, kind: ImportKind, now: datetime, ratings: validation.RatingScale
) -> Iterator[tuple[int, Any, list[RowProblem]]]:
    """Each data row parsed (or None) with its problems, including repeats of a key."""
    spec = FORMATS[kind]
    seen: dict[Any, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as stream:
        try:
            for line, row, problems in _records(stream, kind):
                if row is None:
                    yield line, None, problems
                    continue
                check = RowCheck(line, ratings)
                value = spec.parse(check, row, now)
                if spec.key is not None and not check.problems:
                    key = spec.key(value)
                    if key in seen:
                        check.add("", f"repeats {key!r} from line {seen[key]}")
                    else:
                        seen[key] = line
                yield line, value, check.problems
        except UnicodeDecodeError:
            # Text is decoded a buffer at a time, ahead of the rows: find the line itself.
            line, reason = _undecodable_line(path)
            yield line, None, [RowProblem(line, "", f"is not UTF-8 text ({reason})")]
        except csv.Error as exc:
            yield 0, None, [RowProblem(0, "", f"not valid CSV: {exc}")]


def _undecodable_line(path: Path) -> tuple[int, str]:
    """The first line of ``path`` that is not UTF-8, and why (only read when one is not)."""
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                return number, f"byte {raw[exc.start]:#04x} at character {exc.start + 1}"
    return 1, "undecodable bytes"


@dataclass
class CheckedFile:
    """A file whose every row passed: its size and the users and items its rows refer to."""

    rows: int = 0
    user_ids: set[str] = field(default_factory=set)
    item_ids: set[str] = field(default_factory=set)


def check_file(
    path: Path,
    kind: ImportKind,
    now: datetime,
    ratings: validation.RatingScale,
    *,
    progress: bool = False,
) -> CheckedFile:
    """Validate every row of ``path``; raises ``ImportRefused`` listing the first problems."""
    problems: list[RowProblem] = []
    checked = CheckedFile()
    bad_rows = 0
    with tqdm(desc=f"checking {path.name}", unit=" rows", disable=not progress) as bar:
        for _line, value, row_problems in _parsed(path, kind, now, ratings):
            checked.rows += 1
            if row_problems:
                bad_rows += 1
                if len(problems) < MAX_REPORTED_PROBLEMS:
                    problems.extend(row_problems[: MAX_REPORTED_PROBLEMS - len(problems)])
            elif kind is ImportKind.INTERACTIONS:
                checked.user_ids.add(value.user_id)
                checked.item_ids.add(value.item_id)
            elif kind is ImportKind.PREFERENCES:
                checked.user_ids.add(value[0])
            if checked.rows % 10_000 == 0:
                bar.update(10_000)
        bar.update(checked.rows % 10_000)
    if bad_rows:
        raise ImportRefused(path, problems, bad_rows)
    return checked


def _batches(
    path: Path, kind: ImportKind, now: datetime, ratings: validation.RatingScale, size: int
) -> Iterator[tuple[list[int], list[Any]]]:
    """(line numbers, rows) in batches of ``size``."""
    lines: list[int] = []
    batch: list[Any] = []
    for line, value, _problems in _parsed(path, kind, now, ratings):
        lines.append(line)
        batch.append(value)
        if len(batch) >= size:
            yield lines, batch
            lines, batch = [], []
    if batch:
        yield lines, batch


# -- writing --------------------------------------------------------------------------------------


def import_file(
    db: Database,
    kind: ImportKind | str,
    path: Path | str,
    *,
    now: datetime | None = None,
    progress: bool = False,
    chunk_rows: int = 20_000,
    ratings: validation.RatingScale | None = None,
) -> ImportReport:
    """Check ``path`` whole, then write it in one transaction; ``ImportRefused`` if any row is bad.

    ``now`` bounds future times (default: the current time); ``ratings`` is the accepted rating
    scale (default: ``Settings``' default). ``progress`` shows tqdm bars on stderr. Re-importing
    the same file stores nothing new.
    """
    kind = ImportKind(kind)
    path = Path(path)
    now = now or utcnow()
    ratings = ratings or validation.RatingScale.of(Settings())
    checked = check_file(path, kind, now, ratings, progress=progress)
    rows = checked.rows
    new_rows = 0
    with (
        db.writer() as session,
        _large_cache(session),
        tqdm(total=rows, desc=f"writing {kind}", unit=" rows", disable=not progress) as bar,
    ):
        created_users = bulk.ensure_users(session, checked.user_ids, now)
        created_items = bulk.ensure_items(session, checked.item_ids, now)
        for lines, batch in _batches(path, kind, now, ratings, chunk_rows):
            try:
                with session.begin_nested():
                    new_rows += _write(session, kind, batch, now)
            except Exception as exc:
                reason = bulk.refused_by_database(exc)
                if reason is None:
                    raise
                line, reason = _first_refused(session, kind, lines, batch, now) or (
                    lines[0],
                    f"{reason} (in the {len(batch)} rows from this line on)",
                )
                problem = RowProblem(line, "", f"the database refused the row: {reason}")
                raise ImportRefusedByDatabase(path, problem) from exc
            bar.update(len(batch))
    return ImportReport(
        kind=kind,
        rows=rows,
        new_rows=new_rows,
        created_users=created_users,
        created_items=created_items,
    )


def _write(session: Session, kind: ImportKind, batch: Sequence[Any], now: datetime) -> int:
    """Store checked rows; returns how many were not stored before. Running servers are told
    whose context changed when the import commits (``db.change_feed``, PostgreSQL)."""
    if kind is ImportKind.PREFERENCES:
        notify_changed(session, (user_id for user_id, _, _ in batch))
    elif kind is not ImportKind.ITEMS:
        notify_changed(session, (row.user_id for row in batch))
    if kind is ImportKind.INTERACTIONS:
        return bulk.insert_new(session, m.Interaction, _interaction_rows(batch, now), "event_id")
    if kind is ImportKind.ITEMS:
        stored = bulk.stored_keys(session, m.Item, "item_id", (i.item_id for i in batch))
        bulk.upsert_items(session, batch, now)
        return sum(1 for i in batch if i.item_id not in stored)
    if kind is ImportKind.USERS:
        stored = bulk.stored_keys(session, m.User, "user_id", (u.user_id for u in batch))
        bulk.upsert_users(session, batch, now)
        return sum(1 for u in batch if u.user_id not in stored)
    new = bulk.count_new_preferences(session, batch)
    bulk.upsert_preferences(session, batch)
    return new


def _refusal(session: Session, kind: ImportKind, rows: Sequence[Any], now: datetime) -> str | None:
    """Why the database refuses ``rows``, or None; nothing of the attempt is kept."""
    attempt = session.begin_nested()
    try:
        _write(session, kind, rows, now)
    except Exception as exc:
        attempt.rollback()
        reason = bulk.refused_by_database(exc)
        if reason is None:
            raise
        return reason
    attempt.rollback()
    return None


def _first_refused(
    session: Session, kind: ImportKind, lines: Sequence[int], batch: Sequence[Any], now: datetime
) -> tuple[int, str] | None:
    """The line of the first row the database refuses on its own (halving the batch, each try
    in a savepoint that is rolled back), and why; None when no single row is refused."""
    low, high = 0, len(batch)
    while high - low > 1:
        middle = (low + high) // 2
        if _refusal(session, kind, batch[low:middle], now) is not None:
            high = middle
        else:
            low = middle
    reason = _refusal(session, kind, batch[low:high], now)
    return None if reason is None else (lines[low], reason)


def _interaction_rows(events: Sequence[CheckedEvent], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "event_id": e.event_id
            or derived_event_id(e.user_id, e.item_id, e.type, e.value, e.occurred_at),
            "user_id": e.user_id,
            "item_id": e.item_id,
            "type": e.type.value,
            "value": e.value,
            "content_type": e.content_type,
            "platform": e.platform,
            "metadata": {},
            "recset_id": e.recset_id,
            "occurred_at": e.occurred_at,
            "received_at": now,
        }
        for e in events
    ]


def _large_cache(session: Session) -> AbstractContextManager[None]:
    """The backend's set-up for a large bulk load, for the duration (``db.dialect``)."""
    conn = session.connection()
    return sql_of(conn).bulk_load(conn)
