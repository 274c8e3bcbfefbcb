"""Input rules shared by every way data gets in (gRPC requests, CSV imports).

Each ``*_problem`` function returns why a value is refused, or ``None`` when it is fine; callers
attach the field name (a request field, a CSV column and line). Keeping the rules here means an
import cannot store what the API would refuse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from recgrpc import domain

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 128
MAX_TITLE_LENGTH = 512
MAX_METADATA_ENTRIES = 64
MAX_METADATA_BYTES = 4096
MAX_LABELS = 100
MAX_FUTURE = timedelta(minutes=5)
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_RATING = 10.0
MAX_VALUE = 1e9
MAX_PREFERENCE_SCORE = 1e6


def identifier_problem(value: str) -> str | None:
    """Ids are 1-128 printable characters."""
    if not value:
        return "is required"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters"
    if not value.isprintable():
        return "must contain only printable characters"
    return None


def text_problem(value: str, limit: int = MAX_TEXT_LENGTH) -> str | None:
    """Free text (may be empty): at most ``limit`` printable characters."""
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if value and not value.isprintable():
        return "must contain only printable characters"
    return None


def number_problem(value: float, low: float, high: float) -> str | None:
    if not math.isfinite(value) or not low <= value <= high:
        return f"must be a finite number within {low:g}..{high:g}"
    return None


def interaction_value_problem(kind: domain.InteractionType, value: float) -> str | None:
    """Ratings are 0..10; other values just need to be finite and sane."""
    if kind is domain.InteractionType.RATING:
        return number_problem(value, 0.0, MAX_RATING)
    return number_problem(value, -MAX_VALUE, MAX_VALUE)


def time_problem(when: datetime, now: datetime) -> str | None:
    """Event and creation times lie within 1970-01-01 .. now + 5 minutes (clock skew)."""
    if when < MIN_TIME:
        return "must not be before 1970-01-01"
    if when > now + MAX_FUTURE:
        return "must not be in the future"
    return None


def string_map_problems(values: Mapping[str, str]) -> list[tuple[str, str]]:
    """Attribute/metadata maps: (key or "", reason) for each problem; empty when fine."""
    problems: list[tuple[str, str]] = []
    if len(values) > MAX_METADATA_ENTRIES:
        problems.append(("", f"must have at most {MAX_METADATA_ENTRIES} entries"))
    size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
    if size > MAX_METADATA_BYTES:
        problems.append(("", f"must be at most {MAX_METADATA_BYTES} bytes in total"))
    for key, value in values.items():
        if not key or not key.isprintable() or len(key) > MAX_TEXT_LENGTH:
            problems.append(
                ("", f"key {key[:32]!r} must be 1-{MAX_TEXT_LENGTH} printable characters")
            )
        elif not value.isprintable():
            problems.append((key, "must contain only printable characters"))
    return problems
