"""Checking and parsing the rows of an import file (``recgrpc import``), one row at a time.

Each row is checked with the rules the gRPC API applies (``recgrpc.validation``); problems are
collected per line and column so a refused file names every one.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from recgrpc import domain, validation

MAX_REPORTED_PROBLEMS = 20
"""Problems listed when a file is refused (the total count is always given)."""
LIST_SEPARATOR = "|"
_UNIX_HINT_ABOVE = 1e11  # larger "seconds" are almost surely milliseconds
_TYPE_NAMES: dict[str, domain.InteractionType] = {}
"""Interaction type spellings seen so far (``click``, ``CLICK``...), parsed once each."""


class ImportKind(enum.StrEnum):
    ITEMS = "items"
    USERS = "users"
    PREFERENCES = "preferences"
    INTERACTIONS = "interactions"


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one line of a file is refused; ``column`` is empty for problems with the whole row."""

    line: int
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.reason}"


class ImportRefused(Exception):
    """The file was refused and nothing from it was written."""

    def __init__(self, path: Path, problems: Sequence[RowProblem], bad_rows: int) -> None:
        self.path = path
        self.problems = list(problems)
        self.bad_rows = bad_rows
        super().__init__(f"{path} refused: {bad_rows} bad row(s); nothing was written")


class ImportRefusedByDatabase(ImportRefused):
    """A row passed every check but the database refused it (a rule only the database holds);
    the import was rolled back, so nothing from the file was written."""

    def __init__(self, path: Path, problem: RowProblem) -> None:
        super().__init__(path, [problem], 1)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import stored."""

    kind: ImportKind
    rows: int
    """Data rows in the file."""
    new_rows: int
    """Rows that were not stored before (new users, items, preferences or events)."""
    created_users: int = 0
    """Bare users created because rows referred to them."""
    created_items: int = 0
    """Bare items created because interactions referred to them."""


class RowCheck:
    """Problems found in one row; rows are parsed even when bad, to report everything at once.

    The common case (a valid cell) takes a fast inline test; the shared rule in
    ``recgrpc.validation`` decides, and words the reason, whenever that test fails.
    """

    __slots__ = ("line", "problems", "ratings")

    def __init__(self, line: int, ratings: validation.RatingScale) -> None:
        self.line = line
        self.ratings = ratings
        self.problems: list[RowProblem] = []

    def add(self, column: str, reason: str) -> None:
        self.problems.append(RowProblem(self.line, column, reason))

    def identifier(self, column: str, value: str, limit: int = validation.MAX_ID_LENGTH) -> str:
        if 0 < len(value) <= limit and value.isprintable():
            return value
        problem = validation.identifier_problem(value, limit)
        if problem:
            self.add(column, problem)
        return value

    def text(self, column: str, value: str, limit: int = validation.MAX_TEXT_LENGTH) -> str:
        if not value:
            return value
        problem = validation.text_problem(value, limit)
        if problem:
            self.add(column, problem)
        return value

    def interaction_type(self, column: str, text: str) -> domain.InteractionType:
        kind = _TYPE_NAMES.get(text)
        if kind is None:
            try:
                kind = domain.InteractionType.parse(text)
            except ValueError as exc:
                self.add(column, str(exc))
                return domain.InteractionType.VIEW
            _TYPE_NAMES[text] = kind
        return kind

    def number(self, column: str, text: str, default: float | None = None) -> float | None:
        """The cell as a float (``default`` when empty); None, and a problem, when unreadable."""
        if not text.strip() and default is not None:
            return default
        try:
            return float(text)
        except ValueError:
            self.add(column, f"{text[:40]!r} is not a number")
            return None

    def labels(self, column: str, text: str) -> tuple[str, ...]:
        labels = tuple(dict.fromkeys(p.strip() for p in text.split(LIST_SEPARATOR) if p.strip()))
        if len(labels) > validation.MAX_LABELS:
            self.add(column, f"must have at most {validation.MAX_LABELS} entries")
        for label in labels:
            problem = validation.identifier_problem(label)
            if problem:
                self.add(column, f"{label[:40]!r} {problem}")
        return labels

    def time(self, column: str, text: str, now: datetime) -> datetime:
        when = parse_time(text)
        if when is not None:
            problem = validation.time_problem(when, now)
        elif _is_number(text):
            problem = validation.unix_seconds_problem(float(text), now)
        else:
            problem = f"{text[:40]!r} is not an ISO-8601 time or Unix seconds"
        if problem:
            if text.strip().replace(".", "", 1).isdigit() and float(text) > _UNIX_HINT_ABOVE:
                problem += " (Unix times are in seconds, not milliseconds)"
            self.add(column, problem)
        return when or now

    def attributes(self, values: dict[str, str]) -> dict[str, str]:
        for key, problem in validation.string_map_problems(values):
            self.add(key or "attributes", problem)
        return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_time(text: str) -> datetime | None:
    """ISO-8601 (a time without a zone is UTC) or Unix seconds; None when neither."""
    text = text.strip()
    if not text:
        return None
    # Try the likelier reading first: exceptions are the slow path when importing millions.
    if "-" in text[1:] or ":" in text or "T" in text:
        return _iso_time(text) or _unix_time(text)
    return _unix_time(text) or _iso_time(text)


def _iso_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _unix_time(text: str) -> datetime | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def derived_event_id(
    user_id: str, item_id: str, kind: domain.InteractionType, value: float, when: datetime
) -> str:
    """A stable id from an event's content, so re-importing the same row is a no-op."""
    micros = round(when.timestamp() * 1_000_000)
    content = f"{user_id}\x1f{item_id}\x1f{kind.value}\x1f{value!r}\x1f{micros}"
    return "csv-" + hashlib.blake2b(content.encode(), digest_size=16).hexdigest()


# -- the four formats -----------------------------------------------------------------------------

_Parser = Callable[[RowCheck, dict[str, str], datetime], Any]


@dataclass(frozen=True, slots=True)
class RowFormat:
    required: tuple[str, ...]
    optional: tuple[str, ...]
    extra_columns_are_attributes: bool
    parse: _Parser
    key: Callable[[Any], Any] | None
    """Rows must not repeat this key (as the API refuses repeats in one batch)."""


class CheckedEvent(NamedTuple):
    """A checked interaction row (lighter than ``domain.Interaction`` for millions of rows)."""

    event_id: str
    """Empty when the file has none: derived from the content when the row is written."""
    user_id: str
    item_id: str
    type: domain.InteractionType
    value: float
    occurred_at: datetime
    content_type: str
    platform: str
    recset_id: str


def _valid_event(
    row: dict[str, str], now: datetime, ratings: validation.RatingScale
) -> CheckedEvent | None:
    """The common case in one pass of inline tests; None sends the row to ``_interaction``,
    which applies (and words) the shared rules. Accepts nothing that ``_interaction`` refuses."""
    user_id = row["user_id"].strip()
    item_id = row["item_id"].strip()
    if not (
        0 < len(user_id) <= validation.MAX_ID_LENGTH
        and user_id.isprintable()
        and 0 < len(item_id) <= validation.MAX_ID_LENGTH
        and item_id.isprintable()
    ):
        return None
    kind = _TYPE_NAMES.get(row["type"])
    if kind is None:
        return None
    text = row.get("value", "")
    value = 0.0
    if text and not text.isspace():
        try:
            value = float(text)
        except ValueError:
            return None
        if validation.interaction_value_problem(kind, value, ratings):
            return None
    when = parse_time(row["occurred_at"])
    if when is None or validation.time_problem(when, now):
        return None
    event_id = row.get("event_id", "").strip()
    recset_id = row.get("recset_id", "").strip()
    content_type = row.get("content_type", "")
    platform = row.get("platform", "")
    if event_id and validation.identifier_problem(event_id):
        return None
    if recset_id and validation.identifier_problem(recset_id, validation.MAX_RECSET_ID_LENGTH):
        return None
    for free_text in (content_type, platform):
        if free_text and validation.text_problem(free_text):
            return None
    return CheckedEvent(
        event_id, user_id, item_id, kind, value, when, content_type, platform, recset_id
    )


def _interaction(check: RowCheck, row: dict[str, str], now: datetime) -> CheckedEvent:
    event = _valid_event(row, now, check.ratings)
    if event is not None:
        return event
    user_id = check.identifier("user_id", row["user_id"].strip())
    item_id = check.identifier("item_id", row["item_id"].strip())
    kind = check.interaction_type("type", row["type"])
    value = check.number("value", row.get("value", ""), default=0.0)
    if value is not None:
        problem = validation.interaction_value_problem(kind, value, check.ratings)
        if problem:
            check.add("value", problem)
    occurred_at = check.time("occurred_at", row["occurred_at"], now)
    event_id = row.get("event_id", "").strip()
    if event_id:
        check.identifier("event_id", event_id)
    recset_id = row.get("recset_id", "").strip()
    if recset_id:
        check.identifier("recset_id", recset_id, validation.MAX_RECSET_ID_LENGTH)
    content_type = check.text("content_type", row.get("content_type", ""))
    platform = check.text("platform", row.get("platform", ""))
    return CheckedEvent(
        event_id,
        user_id,
        item_id,
        kind,
        value or 0.0,
        occurred_at,
        content_type,
        platform,
        recset_id,
    )


_ITEM_COLUMNS = ("title", "categories", "tags", "created_at", "active")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def _item(check: RowCheck, row: dict[str, str], now: datetime) -> domain.Item:
    item_id = check.identifier("item_id", row["item_id"].strip())
    created_text = row.get("created_at", "").strip()
    active_text = row.get("active", "").strip().lower()
    active = True
    if active_text in _FALSE:
        active = False
    elif active_text and active_text not in _TRUE:
        check.add("active", f"{active_text[:20]!r} is not true/false")
    attributes = {
        k: v.strip()
        for k, v in row.items()
        if k not in _ITEM_COLUMNS and k != "item_id" and v.strip()
    }
    return domain.Item(
        item_id=item_id,
        title=check.text("title", row.get("title", "").strip(), validation.MAX_TITLE_LENGTH),
        categories=check.labels("categories", row.get("categories", "")),
        tags=check.labels("tags", row.get("tags", "")),
        created_at=check.time("created_at", created_text, now) if created_text else None,
        attributes=check.attributes(attributes),
        active=active,
    )


def _user(check: RowCheck, row: dict[str, str], now: datetime) -> domain.User:
    user_id = check.identifier("user_id", row["user_id"].strip())
    attributes = {k: v.strip() for k, v in row.items() if k != "user_id" and v.strip()}
    return domain.User(user_id=user_id, attributes=check.attributes(attributes))


def _preference(check: RowCheck, row: dict[str, str], now: datetime) -> tuple[str, str, float]:
    user_id = check.identifier("user_id", row["user_id"].strip())
    category = check.identifier("category", row["category"].strip())
    score = check.number("score", row["score"])
    if score is not None:
        problem = validation.preference_score_problem(score)
        if problem:
            check.add("score", problem)
    return user_id, category, score or 0.0


FORMATS = {
    ImportKind.INTERACTIONS: RowFormat(
        required=("user_id", "item_id", "type", "occurred_at"),
        optional=("value", "event_id", "content_type", "platform", "recset_id"),
        extra_columns_are_attributes=False,
        parse=_interaction,
        key=None,
    ),
    ImportKind.ITEMS: RowFormat(
        required=("item_id",),
        optional=_ITEM_COLUMNS,
        extra_columns_are_attributes=True,
        parse=_item,
        key=lambda item: item.item_id,
    ),
    ImportKind.USERS: RowFormat(
        required=("user_id",),
        optional=(),
        extra_columns_are_attributes=True,
        parse=_user,
        key=lambda user: user.user_id,
    ),
    ImportKind.PREFERENCES: RowFormat(
        required=("user_id", "category", "score"),
        optional=(),
        extra_columns_are_attributes=False,
        parse=_preference,
        key=lambda pref: (pref[0], pref[1]),
    ),
}
