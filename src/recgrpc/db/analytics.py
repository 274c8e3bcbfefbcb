"""Read-only aggregates for the operator's dashboard. Each function takes the caller's session.

Time buckets (hours, days) are counted in the database, so a page reads a few hundred rows
whatever the number of events; only the bucket expression differs between the backends.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from recgrpc.db import models as m
from recgrpc.db.dialect import sql_of

HOUR = 3600
DAY = 86400


def _shift(
    session: Session, column: InstrumentedAttribute[datetime], seconds: int
) -> ColumnElement[Any]:
    """``column`` moved by ``seconds``, comparable with other time columns."""
    return sql_of(session).shifted(column, seconds)


def _bucket(
    session: Session, column: InstrumentedAttribute[datetime], seconds: int
) -> ColumnElement[Any]:
    """``column`` as whole ``seconds`` since the epoch (UTC): the index of its time bucket."""
    return sql_of(session).epoch_bucket(column, seconds)


def _bucket_start(index: int, seconds: int) -> datetime:
    return datetime.fromtimestamp(index * seconds, UTC)


@dataclass(frozen=True)
class Totals:
    """What the service holds, counted."""

    items: int
    active_items: int
    users: int
    interactions: int
    lists_served: int
    feedback: int


def totals(session: Session) -> Totals:
    """Row counts of the main tables (one statement)."""

    def count(column: Any, *where: Any) -> Any:
        return select(func.count(column)).where(*where).scalar_subquery()

    row = session.execute(
        select(
            count(m.Item.item_id),
            count(m.Item.item_id, m.Item.active.is_(True)),
            count(m.User.user_id),
            count(m.Interaction.id),
            count(m.Impression.recset_id),
            count(m.Feedback.id),
        )
    ).one()
    return Totals(*(int(v or 0) for v in row))


def events_per_hour(session: Session, since: datetime) -> dict[datetime, int]:
    """Events per UTC hour (keyed by the hour's start) since ``since``; empty hours absent."""
    hour = _bucket(session, m.Interaction.occurred_at, HOUR)
    rows = session.execute(
        select(hour, func.count()).where(m.Interaction.occurred_at >= since).group_by(hour)
    )
    return {_bucket_start(int(h), HOUR): int(n) for h, n in rows}


def fallback_reasons(session: Session, since: datetime) -> list[tuple[str, int]]:
    """Lists served since ``since`` by fallback reason (``""``: personalised), most first."""
    reason = m.Impression.fallback_reason
    rows = session.execute(
        select(reason, func.count())
        .where(m.Impression.served_at >= since)
        .group_by(reason)
        .order_by(func.count().desc(), reason)
    )
    return [(r or "", int(n)) for r, n in rows]


def events_after_lists(
    session: Session, since: datetime, window: timedelta, types: Collection[str]
) -> list[tuple[str, str, str, datetime]]:
    """(user_id, item_id, type, occurred_at) of the ``types`` given that happened within
    ``window`` after a list was served to that user since ``since``: the only events that can
    make a shown item a hit (``model.evaluation.online_metrics`` decides which do). In no
    particular order: sorting by user would walk the whole (user, time) index on SQLite.

    A semi-join on the served lists' (user, time) index, so a page reads the few events near a
    list instead of every event of the period.
    """
    i, p = m.Interaction, m.Impression
    # One second of slack: SQLite's datetime() drops the fraction (the rule is applied later).
    earliest = _shift(session, i.occurred_at, -int(window.total_seconds()) - 1)
    near_a_list = (
        select(p.recset_id)
        .where(p.user_id == i.user_id, p.served_at >= since)
        .where(p.served_at <= i.occurred_at, p.served_at >= earliest)
        .exists()
    )
    rows = session.execute(
        select(i.user_id, i.item_id, i.type, i.occurred_at).where(
            i.occurred_at >= since, i.type.in_(sorted(types)), near_a_list
        )
    )
    return [(u, item, kind, at) for u, item, kind, at in rows]


def churn_levels(session: Session) -> dict[str, int]:
    """Users by the risk level of their latest recorded churn prediction."""
    p = m.ChurnPrediction
    latest = (
        select(
            p.level,
            func.row_number()
            .over(partition_by=p.user_id, order_by=(p.predicted_at.desc(), p.id.desc()))
            .label("newest"),
        )
    ).subquery()
    rows = session.execute(
        select(latest.c.level, func.count()).where(latest.c.newest == 1).group_by(latest.c.level)
    )
    return {level: int(n) for level, n in rows}


@dataclass(frozen=True)
class ModelRecord:
    """A stored model without its artifact bytes."""

    kind: str
    version: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime
    activated_at: datetime | None


def models(session: Session) -> list[ModelRecord]:
    """Every stored model, newest first (artifacts are not read)."""
    a = m.ModelArtifact
    rows = session.execute(
        select(
            a.kind, a.version, a.status, a.params, a.metrics, a.created_at, a.activated_at
        ).order_by(a.created_at.desc(), a.id.desc())
    )
    return [
        ModelRecord(kind, version, status, dict(params or {}), dict(metrics or {}), made, active)
        for kind, version, status, params, metrics, made, active in rows
    ]


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    attributes: dict[str, str]
    preferences: list[tuple[str, float]]
    """(category, score), strongest first."""
    created_at: datetime
    updated_at: datetime


def user_record(session: Session, user_id: str) -> UserRecord | None:
    """A user's profile and stated preferences, or None for an unknown user."""
    row = session.execute(
        select(m.User.attributes, m.User.created_at, m.User.updated_at).where(
            m.User.user_id == user_id
        )
    ).first()
    if row is None:
        return None
    preferences = session.execute(
        select(m.Preference.category, m.Preference.score)
        .where(m.Preference.user_id == user_id)
        .order_by(m.Preference.score.desc(), m.Preference.category)
    )
    return UserRecord(
        user_id=user_id,
        attributes=dict(row[0] or {}),
        preferences=[(c, float(s)) for c, s in preferences],
        created_at=row[1],
        updated_at=row[2],
    )


@dataclass(frozen=True)
class HistoryEntry:
    item_id: str
    type: str
    value: float
    platform: str
    occurred_at: datetime


def recent_history(session: Session, user_id: str, limit: int) -> list[HistoryEntry]:
    """A user's latest ``limit`` interactions, newest first."""
    i = m.Interaction
    rows = session.execute(
        select(i.item_id, i.type, i.value, i.platform, i.occurred_at)
        .where(i.user_id == user_id)
        .order_by(i.occurred_at.desc(), i.id.desc())
        .limit(limit)
    )
    return [HistoryEntry(item, kind, float(v), p or "", at) for item, kind, v, p, at in rows]


@dataclass(frozen=True)
class ItemRecord:
    item_id: str
    title: str
    categories: list[str]
    tags: list[str]
    attributes: dict[str, str]
    active: bool
    created_at: datetime
    updated_at: datetime


def item_records(session: Session, item_ids: Iterable[str]) -> dict[str, ItemRecord]:
    """The stored items among ``item_ids`` (unknown ids are absent)."""
    wanted = sorted(set(item_ids))
    if not wanted:
        return {}
    t = m.Item
    rows = session.execute(
        select(
            t.item_id,
            t.title,
            t.categories,
            t.tags,
            t.attributes,
            t.active,
            t.created_at,
            t.updated_at,
        ).where(t.item_id.in_(wanted))
    )
    return {
        r[0]: ItemRecord(
            r[0],
            r[1] or "",
            list(r[2] or []),
            list(r[3] or []),
            dict(r[4] or {}),
            bool(r[5]),
            r[6],
            r[7],
        )
        for r in rows
    }


def item_events_per_day(
    session: Session, item_id: str, since: datetime
) -> dict[tuple[datetime, str], int]:
    """An item's events per (UTC day, interaction type) since ``since``."""
    day = _bucket(session, m.Interaction.occurred_at, DAY)
    rows = session.execute(
        select(day, m.Interaction.type, func.count())
        .where(m.Interaction.item_id == item_id, m.Interaction.occurred_at >= since)
        .group_by(day, m.Interaction.type)
    )
    return {(_bucket_start(int(d), DAY), kind): int(n) for d, kind, n in rows}


def item_totals(session: Session, item_id: str) -> Sequence[tuple[str, int]]:
    """An item's events of all time by interaction type, most first."""
    rows = session.execute(
        select(m.Interaction.type, func.count())
        .where(m.Interaction.item_id == item_id)
        .group_by(m.Interaction.type)
        .order_by(func.count().desc(), m.Interaction.type)
    )
    return [(kind, int(n)) for kind, n in rows]
