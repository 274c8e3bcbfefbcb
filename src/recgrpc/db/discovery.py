"""Reads and writes of the discovery RPCs: item texts, titles and discovery impressions.

Every function takes the caller's Core connection or session.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from recgrpc.db import models as m


@dataclass(frozen=True)
class ItemText:
    item_id: str
    title: str
    categories: list[str]
    tags: list[str]
    active: bool


def item_texts(conn: Connection | Session, item_ids: Iterable[str]) -> dict[str, ItemText]:
    """The stored items among ``item_ids``, active or not (unknown ids are absent)."""
    wanted = sorted(set(item_ids))
    if not wanted:
        return {}
    t = m.Item
    rows = conn.execute(
        select(t.item_id, t.title, t.categories, t.tags, t.active).where(t.item_id.in_(wanted))
    )
    return {
        r[0]: ItemText(r[0], r[1] or "", list(r[2] or []), list(r[3] or []), bool(r[4]))
        for r in rows
    }


def active_titles(session: Session) -> dict[str, str]:
    """item_id -> title of every active item (training's content index reads the titles)."""
    t = m.Item
    return {
        item_id: title or ""
        for item_id, title in session.execute(select(t.item_id, t.title).where(t.active.is_(True)))
    }


@dataclass(frozen=True)
class DiscoveryImpression:
    """One list a discovery RPC served (a similar-items list, a home-feed shelf ...)."""

    recset_id: str
    user_id: str
    source: str
    """What produced it, stored in the impression's ``algorithm`` (e.g. ``SIMILAR_AUTO``)."""
    model_version: str
    fallback_reason: str
    item_ids: Sequence[str]
    platform: str
    served_at: datetime


def record_impressions(conn: Connection, served: Sequence[DiscoveryImpression]) -> None:
    """Store impressions only: unlike GetRecommendations' lists, these never replace the
    user's stored top-N."""
    if not served:
        return
    rows: list[dict[str, Any]] = [
        {
            "recset_id": s.recset_id,
            "user_id": s.user_id,
            "algorithm": s.source,
            "model_version": s.model_version,
            "fallback_reason": s.fallback_reason[:256],
            "item_ids": list(s.item_ids),
            "platform": s.platform,
            "served_at": s.served_at,
        }
        for s in served
    ]
    conn.execute(insert(m.Impression), rows)
