"""Serving: one user's context for GetRecommendations, the lists served, their attribution.

On every GetRecommendations: ``load_user_context`` reads (a Core connection, no ORM session) and
``record_impressions`` writes (written behind, ``server.impressions``). What differs by backend
is ``db.dialect``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from recgrpc import domain
from recgrpc.db import models as m
from recgrpc.db.dialect import core_connection, sql_of


def load_user_context(
    conn: Connection, user_id: str, recent_limit: int = 100
) -> domain.UserContext:
    """Everything ranking needs about one user, in four indexed queries (one on PostgreSQL).

    Takes a Core connection (``Database.connection``): on every GetRecommendations, an ORM
    session and transaction cost more than the queries.
    """
    found = sql_of(conn).user_context_rows(conn, user_id, recent_limit)
    if found is None:
        return domain.UserContext(user_id=user_id, known=False)
    attributes, history, dismissed, preferences = found
    return domain.UserContext(
        user_id=user_id,
        known=True,
        seen_item_ids=frozenset(row[0] for row in history),
        dismissed_item_ids=frozenset(dismissed),
        preferences=preferences,
        attributes=dict(attributes or {}),
        recent=tuple(
            domain.RecentInteraction(item_id, domain.InteractionType(kind), value, at)
            for item_id, kind, value, at in history[:recent_limit]
        ),
    )


def notify_changed(session: Session | Connection, user_ids: Iterable[str]) -> None:
    """Tell other server processes, when this transaction commits, that these users' context
    changed (PostgreSQL: ``db.change_feed``; SQLite: ``db.sqlite_feed``).
    LogInteraction's statement announces its users itself."""
    conn = core_connection(session)
    sql_of(conn).notify_users(conn, sorted(set(user_ids)))


def notify_erased(session: Session | Connection, user_id: str) -> None:
    """``notify_changed`` for an erased user: a feed kept in a table keeps no trace of them."""
    conn = core_connection(session)
    sql_of(conn).notify_erased(conn, user_id)


def record_impressions(
    session: Session | Connection, served: Sequence[tuple[str, domain.ServedList, str]]
) -> None:
    """Store served lists as impressions: ``(user_id, list, platform)`` rows.

    The stored top-N (``recommendations``) is the training job's and is not touched: serving
    only reads. A batch is one statement (on PostgreSQL the rows travel as one JSON parameter).
    """
    if not served:
        return
    conn = core_connection(session)
    impressions = [  # in IMPRESSION_COLUMNS order
        (
            listed.recset_id,
            user_id,
            listed.ranking.algorithm.value,
            listed.ranking.model_version,
            listed.ranking.fallback_reason,
            [it.item_id for it in listed.ranking.items],
            platform,
            listed.generated_at,
        )
        for user_id, listed, platform in served
    ]
    sql_of(conn).record_impressions(conn, impressions)


def lock_users(executor: Session | Connection, user_ids: Iterable[str]) -> None:
    """Serialise writers of these users' stored top-N until the transaction ends.

    Two lists served at once to the same user would otherwise both delete the old rows (neither
    sees the other's uncommitted insert) and then collide on (user_id, item_id). SQLite already
    runs one writer at a time; PostgreSQL takes transaction-scoped advisory locks, in sorted
    order so that two transactions never wait on each other's, in one statement.
    """
    conn = core_connection(executor)
    sql_of(conn).lock_users(conn, sorted(set(user_ids)))


_IMPRESSION_SOURCES = select(
    m.Impression.recset_id, m.Impression.algorithm, m.Impression.model_version
).where(m.Impression.recset_id.in_(bindparam("recset_ids", expanding=True)))


def impression_sources(
    session: Session | Connection, recset_ids: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """recset_id -> (algorithm, model_version) of the stored impressions among ``recset_ids``."""
    wanted = sorted({r for r in recset_ids if r})
    if not wanted:
        return {}
    rows = core_connection(session).execute(_IMPRESSION_SOURCES, {"recset_ids": wanted})
    return {recset_id: (algorithm, version) for recset_id, algorithm, version in rows}
