"""Reads about one user's past: their numbers (GetUserStats), events and churn predictions
(keyset-paginated, newest first), and their recent searches; plus the search index's documents.

Pagination is by keyset on ``(time, id)`` descending, so a page costs an indexed range scan
whatever its depth, and rows written meanwhile never shift a page (unlike OFFSET).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, insert, or_, select
from sqlalchemy.orm import Session

from recgrpc.db import models as m

Cursor = tuple[datetime, int]
"""Where a page ended: the last row's time and id."""


@dataclass(frozen=True)
class UserNumbers:
    """Counts behind GetUserStats (churn fields are None when never predicted)."""

    lists_served: int
    items_shown: int
    items_clicked: int
    items_dismissed: int
    interactions: dict[str, int]
    first_activity: datetime | None
    last_activity: datetime | None
    churn_risk: float | None
    churn_level: str
    churn_predicted_at: datetime | None


def user_numbers(session: Session, user_id: str) -> UserNumbers | None:
    """The user's numbers, or None for a user the service has never stored."""
    if session.scalar(select(m.User.user_id).where(m.User.user_id == user_id)) is None:
        return None
    i = m.Interaction
    by_type: dict[str, int] = {}
    times: list[datetime] = []
    for kind, count, first, last in session.execute(
        select(i.type, func.count(), func.min(i.occurred_at), func.max(i.occurred_at))
        .where(i.user_id == user_id)
        .group_by(i.type)
    ):
        by_type[kind] = int(count)
        times.extend(t for t in (first, last) if t is not None)
    imp = m.Impression
    lists, shown = session.execute(
        select(
            func.count(), func.coalesce(func.sum(func.json_array_length(imp.item_ids)), 0)
        ).where(imp.user_id == user_id)
    ).one()
    f = m.Feedback

    def distinct_pairs(flag: Any) -> int:
        pairs = select(f.recset_id, f.item_id).where(f.user_id == user_id, flag).distinct()
        return int(session.scalar(select(func.count()).select_from(pairs.subquery())) or 0)

    first_fb, last_fb = session.execute(
        select(func.min(f.created_at), func.max(f.created_at)).where(f.user_id == user_id)
    ).one()
    times.extend(t for t in (first_fb, last_fb) if t is not None)
    c = m.ChurnPrediction
    latest = session.execute(
        select(c.risk, c.level, c.predicted_at)
        .where(c.user_id == user_id)
        .order_by(c.predicted_at.desc(), c.id.desc())
        .limit(1)
    ).first()
    return UserNumbers(
        lists_served=int(lists),
        items_shown=int(shown or 0),
        items_clicked=distinct_pairs(f.clicked.is_(True)),
        items_dismissed=distinct_pairs(f.dismissed.is_(True)),
        interactions=by_type,
        first_activity=min(times) if times else None,
        last_activity=max(times) if times else None,
        churn_risk=None if latest is None else float(latest[0]),
        churn_level="" if latest is None else str(latest[1]),
        churn_predicted_at=None if latest is None else latest[2],
    )


@dataclass(frozen=True)
class EventRow:
    event_id: str
    item_id: str
    type: str
    value: float
    content_type: str
    platform: str
    metadata: dict[str, str]
    recset_id: str
    occurred_at: datetime
    row_id: int


def _after(time_col: Any, id_col: Any, cursor: Cursor) -> ColumnElement[bool]:
    """Rows strictly after ``cursor`` in (time, id) descending order."""
    at, row_id = cursor
    return or_(time_col < at, and_(time_col == at, id_col < row_id))


def user_events(
    session: Session,
    user_id: str,
    *,
    limit: int,
    since: datetime | None = None,
    types: Sequence[str] = (),
    cursor: Cursor | None = None,
) -> list[EventRow]:
    """Up to ``limit`` of the user's events, newest first, after ``cursor``."""
    i = m.Interaction
    stmt = select(
        i.event_id, i.item_id, i.type, i.value, i.content_type, i.platform,
        i.event_metadata, i.recset_id, i.occurred_at, i.id,
    ).where(i.user_id == user_id)  # fmt: skip
    if since is not None:
        stmt = stmt.where(i.occurred_at >= since)
    if types:
        stmt = stmt.where(i.type.in_(list(types)))
    if cursor is not None:
        stmt = stmt.where(_after(i.occurred_at, i.id, cursor))
    rows = session.execute(stmt.order_by(i.occurred_at.desc(), i.id.desc()).limit(limit))
    return [
        EventRow(
            event_id=row[0], item_id=row[1], type=row[2], value=float(row[3]),
            content_type=row[4] or "", platform=row[5] or "", metadata=dict(row[6] or {}),
            recset_id=row[7] or "", occurred_at=row[8], row_id=int(row[9]),
        )
        for row in rows
    ]  # fmt: skip


@dataclass(frozen=True)
class PredictionRow:
    risk: float
    level: str
    factors: list[dict[str, Any]]
    model_version: str
    predicted_at: datetime
    as_of: datetime
    horizon_days: int
    row_id: int


def churn_history(
    session: Session, user_id: str, *, limit: int, cursor: Cursor | None = None
) -> list[PredictionRow]:
    """Up to ``limit`` stored churn predictions of the user, newest first, after ``cursor``."""
    c = m.ChurnPrediction
    stmt = select(
        c.risk, c.level, c.factors, c.model_version, c.predicted_at, c.as_of, c.horizon_days, c.id
    ).where(c.user_id == user_id)
    if cursor is not None:
        stmt = stmt.where(_after(c.predicted_at, c.id, cursor))
    rows = session.execute(stmt.order_by(c.predicted_at.desc(), c.id.desc()).limit(limit))
    return [
        PredictionRow(float(r), lv, list(fs or []), mv, at, asof, int(h), rid)
        for r, lv, fs, mv, at, asof, h, rid in rows
    ]


def search_documents(session: Session) -> list[tuple[str, str, list[str], list[str]]]:
    """(item_id, title, categories, tags) of every active item, ordered by id."""
    rows = session.execute(
        select(m.Item.item_id, m.Item.title, m.Item.categories, m.Item.tags)
        .where(m.Item.active.is_(True))
        .order_by(m.Item.item_id)
    )
    return [(r[0], r[1] or "", list(r[2] or []), list(r[3] or [])) for r in rows]


def recent_searches(
    session: Session | Connection, user_id: str, limit: int
) -> list[tuple[str, datetime]]:
    """The user's latest ``limit`` SEARCH events as (query, occurred_at), newest first."""
    i = m.Interaction
    rows = session.execute(
        select(i.event_metadata, i.occurred_at)
        .where(i.user_id == user_id, i.type == "SEARCH")
        .order_by(i.occurred_at.desc(), i.id.desc())
        .limit(limit)
    )
    return [(str((md or {}).get("query", "")), at) for md, at in rows]


def record_impression(
    session: Session,
    *,
    recset_id: str,
    user_id: str,
    algorithm: str,
    model_version: str,
    fallback_reason: str,
    item_ids: list[str],
    platform: str,
    served_at: datetime,
) -> None:
    """Store one served list as an impression only (it does not replace the stored top-N)."""
    session.execute(
        insert(m.Impression).values(
            recset_id=recset_id,
            user_id=user_id,
            algorithm=algorithm,
            model_version=model_version,
            fallback_reason=fallback_reason,
            item_ids=item_ids,
            platform=platform,
            served_at=served_at,
        )
    )
