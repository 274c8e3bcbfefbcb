"""The catalogue and the people in it: items, users with attributes and preferences, erasure.

Each function takes the caller's session and never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from recgrpc import domain
from recgrpc.db import bulk
from recgrpc.db import models as m
from recgrpc.db.rows import table_of

CHUNK = 500
"""Rows per statement; keeps bound parameters under SQLite's per-statement limit."""


def upsert_items(session: Session, items: Sequence[domain.Item], now: datetime) -> None:
    """Insert or replace items; an item sent without created_at keeps the one it has."""
    bulk.upsert_items(session, items, now)


def upsert_users(session: Session, users: Sequence[domain.User], now: datetime) -> None:
    """Insert or update users; each user's preferences are replaced by the ones given."""
    bulk.upsert_users(session, users, now)
    ids = [u.user_id for u in users]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        session.execute(delete(m.Preference).where(m.Preference.user_id.in_(chunk)))
    prefs = [
        {"user_id": u.user_id, "category": cat, "score": score}
        for u in users
        for cat, score in u.preferences.items()
    ]
    for start in range(0, len(prefs), CHUNK):
        session.execute(insert(table_of(m.Preference)), prefs[start : start + CHUNK])


def delete_user(session: Session, user_id: str) -> bool:
    """Erase every row about ``user_id``; True when anything was stored."""
    removed = 0
    for model in m.USER_TABLES:
        result = session.execute(delete(model).where(model.__table__.c.user_id == user_id))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed > 0


def catalogue_stamp(session: Session) -> tuple[int, datetime | None]:
    """(item count, newest ``updated_at``): changes with every catalogue write (items are
    never deleted, and every upsert sets ``updated_at``), at the cost of one scan in the
    database instead of reading every item into Python."""
    count, newest = session.execute(
        select(func.count(), func.max(m.Item.updated_at)).select_from(m.Item)
    ).one()
    return int(count), newest


def catalogue(session: Session) -> list[tuple[str, list[str], list[str], datetime]]:
    """(item_id, categories, tags, created_at) of every active item, ordered by id."""
    rows = session.execute(
        select(m.Item.item_id, m.Item.categories, m.Item.tags, m.Item.created_at)
        .where(m.Item.active.is_(True))
        .order_by(m.Item.item_id)
    ).all()
    return [(r[0], list(r[1] or []), list(r[2] or []), r[3]) for r in rows]


def count_rows(session: Session, model: type[m.Base], **filters: Any) -> int:
    """Rows of ``model`` whose columns equal ``filters``."""
    stmt = select(func.count()).select_from(model)
    for name, value in filters.items():
        stmt = stmt.where(getattr(model, name) == value)
    return int(session.scalar(stmt) or 0)
