"""Input rules and limits shared by every way data gets in (gRPC requests, CSV imports).

Each ``*_problem`` function returns why a value is refused, or ``None`` when it is fine; callers
attach the field name (a request field, a CSV column and line). Keeping the rules here means an
import cannot store what the API would refuse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from recgrpc import domain
from recgrpc.config import Settings

# The string limits below are also the stored columns' lengths (db/models.py builds its String
# types from them), so a value that passes here always fits in the database.
MAX_ID_LENGTH = 128
MAX_RECSET_ID_LENGTH = 64
"""A served list's ``recset_id``: the server makes them (UUIDs); callers only pass them back."""
MAX_TEXT_LENGTH = 128
"""Short free text (``content_type``, ``platform``)."""
MAX_TITLE_LENGTH = 512
MAX_METADATA_ENTRIES = 64
MAX_METADATA_BYTES = 4096
MAX_LABELS = 100
MAX_BATCH = 1000
"""Items or users in one Upsert request."""
MAX_LIST_FIELD = 1000
"""Entries in a repeated id field of a request (``exclude_item_ids``)."""
MAX_FUTURE = timedelta(minutes=5)
"""How far ahead of the server's clock a time may be (the callers' clock skew)."""
MIN_TIME = datetime(1, 1, 1, tzinfo=UTC)
"""The earliest time accepted: catalogues (films, books, music) publish long before 1970."""
MIN_UNIX_SECONDS = -62_135_596_800
"""``MIN_TIME`` in Unix seconds (also protobuf's smallest valid Timestamp)."""
MAX_VALUE = 1e9
MAX_PREFERENCE_SCORE = 1e6
MAX_QUERY_LENGTH = 255
"""Characters in a search query once trimmed (SearchItems, SEARCH events)."""


def before(when: datetime, span: timedelta) -> datetime:
    """``when - span``, or ``MIN_TIME`` when that would fall before it (a window reaching back
    from an event in year 1 has nothing earlier to hold, and datetime cannot go there)."""
    return when - span if when - MIN_TIME > span else MIN_TIME


@dataclass(frozen=True, slots=True)
class RatingScale:
    """The one scale ratings are given on (``Settings.rating_min`` .. ``rating_max``)."""

    low: float
    high: float

    @classmethod
    def of(cls, settings: Settings) -> RatingScale:
        return cls(settings.rating_min, settings.rating_max)

    def problem(self, value: float) -> str | None:
        if not math.isfinite(value) or not self.low <= value <= self.high:
            return f"must be a rating from {self.low:g} to {self.high:g}"
        return None


def identifier_problem(value: str, limit: int = MAX_ID_LENGTH) -> str | None:
    """Ids are 1-128 (``limit``) printable characters."""
    if not value:
        return "is required"
    if len(value) > limit:
        return f"must be at most {limit} characters"
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


def preference_score_problem(score: float) -> str | None:
    """A preference's weight: 0 (no interest) up to ``MAX_PREFERENCE_SCORE``."""
    return number_problem(score, 0.0, MAX_PREFERENCE_SCORE)


def interaction_value_problem(
    kind: domain.InteractionType, value: float, ratings: RatingScale
) -> str | None:
    """RATING values are on the rating scale; other values just need to be finite and sane."""
    if kind is domain.InteractionType.RATING:
        return ratings.problem(value)
    return number_problem(value, -MAX_VALUE, MAX_VALUE)


def search_query_problem(query: str) -> str | None:
    """A search query: 1-255 printable characters once trimmed."""
    text = query.strip()
    if not text:
        return "is required (a search query of 1-255 characters)"
    if len(text) > MAX_QUERY_LENGTH:
        return f"must be at most {MAX_QUERY_LENGTH} characters"
    if not text.isprintable():
        return "must contain only printable characters"
    return None


def time_problem(when: datetime, now: datetime) -> str | None:
    """Event, creation and reference times lie within year 1 .. now + 5 minutes (clock skew)."""
    if when < MIN_TIME:
        return "must not be before year 1"
    if when > now + MAX_FUTURE:
        return "must not be more than 5 minutes in the future"
    return None


def unix_seconds_problem(seconds: float, now: datetime) -> str | None:
    """``time_problem`` for a time given in Unix seconds, which may be beyond ``datetime``."""
    if not math.isfinite(seconds):
        return "is not a valid time"
    if seconds < MIN_UNIX_SECONDS:
        return "must not be before year 1"
    if seconds > now.timestamp() + MAX_FUTURE.total_seconds():
        return "must not be more than 5 minutes in the future"
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
