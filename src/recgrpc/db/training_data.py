"""Bulk reads and writes for training, promotion and evaluation (one SELECT per table, no
per-row queries). Each function takes a Session owned by the caller."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, delete, select
from sqlalchemy.orm import Session

from recgrpc.db import models as m
from recgrpc.db.catalogue import catalogue
from recgrpc.db.dialect import sql_of
from recgrpc.db.serving import lock_users
from recgrpc.records import TrainingRows


def load_training_rows(session: Session) -> TrainingRows:
    """Active items, users, preferences, interactions and feedback in five bulk selects."""
    users = [
        (uid, dict(attrs or {}))
        for uid, attrs in session.execute(select(m.User.user_id, m.User.attributes)).all()
    ]
    preferences = [
        (uid, cat, float(score))
        for uid, cat, score in session.execute(
            select(m.Preference.user_id, m.Preference.category, m.Preference.score)
        ).all()
    ]
    interactions = [
        (u, i, t, v, at)
        for u, i, t, v, at in session.execute(
            select(
                m.Interaction.user_id,
                m.Interaction.item_id,
                m.Interaction.type,
                m.Interaction.value,
                m.Interaction.occurred_at,
            )
        )
    ]
    feedback = [
        (u, i, c, d, r, at)
        for u, i, c, d, r, at in session.execute(
            select(
                m.Feedback.user_id,
                m.Feedback.item_id,
                m.Feedback.clicked,
                m.Feedback.dismissed,
                m.Feedback.rating,
                m.Feedback.created_at,
            )
        )
    ]
    return TrainingRows(
        items=catalogue(session),
        users=users,
        preferences=preferences,
        interactions=interactions,
        feedback=feedback,
    )


# -- online metrics -------------------------------------------------------------------------


def impressions_since(
    session: Session, since: datetime
) -> list[tuple[str, str, str, str, list[str], datetime]]:
    """(recset_id, user_id, algorithm, model_version, item_ids, served_at) served since."""
    rows = session.execute(
        select(
            m.Impression.recset_id,
            m.Impression.user_id,
            m.Impression.algorithm,
            m.Impression.model_version,
            m.Impression.item_ids,
            m.Impression.served_at,
        ).where(m.Impression.served_at >= since)
    ).all()
    return [(r, u, a, v, list(ids or []), at) for r, u, a, v, ids, at in rows]


def feedback_since(session: Session, since: datetime) -> list[tuple[str, str, str, bool, bool]]:
    """(recset_id, user_id, item_id, clicked, dismissed) recorded since."""
    return list(
        session.execute(
            select(
                m.Feedback.recset_id,
                m.Feedback.user_id,
                m.Feedback.item_id,
                m.Feedback.clicked,
                m.Feedback.dismissed,
            ).where(m.Feedback.created_at >= since)
        ).all()
    )


def interactions_since(session: Session, since: datetime) -> list[tuple[str, str, str, datetime]]:
    """(user_id, item_id, type, occurred_at) of events since."""
    return list(
        session.execute(
            select(
                m.Interaction.user_id,
                m.Interaction.item_id,
                m.Interaction.type,
                m.Interaction.occurred_at,
            ).where(m.Interaction.occurred_at >= since)
        ).all()
    )


# -- stored top-N ---------------------------------------------------------------------------


def refresh_recommendation_statistics(session: Session) -> None:
    """Before replacing the stored lists in bulk: each training run rewrites most of the table,
    and with stale statistics PostgreSQL deletes each chunk of users by a sequential scan."""
    conn = session.connection()
    sql_of(conn).refresh_statistics(conn, "recommendations")


def replace_top_n(
    session: Session,
    *,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    top_items: npt.NDArray[np.int64],
    top_scores: npt.NDArray[np.float32],
    algorithm: str,
    model_version: str,
    generated_at: datetime,
) -> None:
    """Replace the stored lists of ``user_ids`` (row r: ``top_items[r]`` indexes ``item_ids``,
    best first; non-finite scores mark missing entries). Bulk DELETE, then the one upsert."""
    table = cast(Table, m.Recommendation.__table__)
    lock_users(session, user_ids)
    for start in range(0, len(user_ids), 500):
        chunk = list(user_ids[start : start + 500])
        session.execute(delete(table).where(table.c.user_id.in_(chunk)))
    finite = np.isfinite(top_scores)
    per_user = finite.sum(axis=1)
    # Column-wise with numpy: no per-row Python work beyond building the driver's parameters.
    users = np.repeat(np.asarray(user_ids, dtype=object), per_user).tolist()
    n = len(users)
    columns: dict[str, Sequence[Any]] = {
        "user_id": users,
        "item_id": np.asarray(item_ids, dtype=object)[top_items[finite]].tolist(),
        "rank": np.broadcast_to(np.arange(1, top_items.shape[1] + 1), top_items.shape)[
            finite
        ].tolist(),
        "score": top_scores[finite].astype(np.float64).tolist(),
        "algorithm": [algorithm] * n,
        "model_version": [model_version] * n,
        "recset_id": [""] * n,
        "generated_at": [generated_at] * n,
        "is_clicked": [False] * n,
        "is_dismissed": [False] * n,
    }
    # A list served to the same user while this runs may re-insert rows we just deleted (its
    # own transaction, PostgreSQL): the training list wins on those items instead of failing.
    conn = session.connection()
    sql_of(conn).upsert_recommendations(conn, columns)
