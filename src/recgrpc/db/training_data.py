"""Bulk reads and writes for training, promotion and evaluation (one SELECT per table, no
per-row queries). Each function takes a Session owned by the caller."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, delete, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from recgrpc.db import models as m
from recgrpc.db.queries import catalogue, lock_users
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
    """PostgreSQL: ANALYZE the stored lists before replacing them in bulk. Each training run
    rewrites most of the table; with stale statistics the planner deletes each chunk of users
    by a sequential scan instead of the (user_id, item_id) index (10x slower)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE recommendations"))


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
    best first; non-finite scores mark missing entries). Bulk DELETE + executemany INSERT."""
    table = cast(Table, m.Recommendation.__table__)
    lock_users(session, user_ids)
    for start in range(0, len(user_ids), 500):
        chunk = list(user_ids[start : start + 500])
        session.execute(delete(table).where(table.c.user_id.in_(chunk)))
    columns = (
        "user_id", "item_id", "rank", "score", "algorithm", "model_version", "recset_id",
        "generated_at", "is_clicked", "is_dismissed",
    )  # fmt: skip
    finite = np.isfinite(top_scores)
    per_user = finite.sum(axis=1)
    # Column-wise with numpy: no per-row Python work beyond building the driver's parameters.
    users = np.repeat(np.asarray(user_ids, dtype=object), per_user).tolist()
    items = np.asarray(item_ids, dtype=object)[top_items[finite]].tolist()
    ranks = np.broadcast_to(np.arange(1, top_items.shape[1] + 1), top_items.shape)[finite].tolist()
    scores = top_scores[finite].astype(np.float64).tolist()
    # A list served to the same user while this runs may re-insert rows we just deleted (its
    # own transaction, PostgreSQL): the training list wins on those items instead of failing.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            _UNNEST_UPSERT,
            {
                "users": users, "items": items, "ranks": ranks, "scores": scores,
                "algorithm": algorithm, "model_version": model_version,
                "generated_at": generated_at,
            },
        )  # fmt: skip
        return
    # SQLite: the driver's executemany over plain tuples, constants bound once (SQLAlchemy's
    # per-row parameter processing would dominate a write of millions of rows).
    conn = session.connection()
    dialect = conn.dialect
    upsert = sqlite.insert(table)
    upsert = upsert.on_conflict_do_update(
        index_elements=["user_id", "item_id"],
        set_={c: upsert.excluded[c] for c in columns if c not in ("user_id", "item_id")},
    )
    compiled = upsert.compile(dialect=dialect, column_keys=list(columns))
    stamp = table.c.generated_at.type.dialect_impl(dialect).bind_processor(dialect)
    constant = {
        "algorithm": algorithm, "model_version": model_version, "recset_id": "",
        "generated_at": stamp(generated_at) if stamp else generated_at,
        "is_clicked": False, "is_dismissed": False,
    }  # fmt: skip
    columns_data: dict[str, Any] = {
        "user_id": users, "item_id": items, "rank": ranks, "score": scores,
    }  # fmt: skip
    for key, value in constant.items():
        columns_data[key] = itertools.repeat(value, len(users))
    order = compiled.positiontup or []
    params = list(zip(*(columns_data[k] for k in order), strict=False))
    sql = str(compiled)
    for begin in range(0, len(params), 50_000):
        conn.exec_driver_sql(sql, params[begin : begin + 50_000])


_UNNEST_UPSERT = text(
    """
    INSERT INTO recommendations (user_id, item_id, rank, score, algorithm, model_version,
                                 recset_id, generated_at, is_clicked, is_dismissed)
    SELECT u, i, r, s, :algorithm, :model_version, '', :generated_at, false, false
    FROM unnest(CAST(:users AS text[]), CAST(:items AS text[]), CAST(:ranks AS integer[]),
                CAST(:scores AS double precision[])) AS t(u, i, r, s)
    ON CONFLICT (user_id, item_id) DO UPDATE SET
        rank = excluded.rank, score = excluded.score, algorithm = excluded.algorithm,
        model_version = excluded.model_version, recset_id = excluded.recset_id,
        generated_at = excluded.generated_at, is_clicked = excluded.is_clicked,
        is_dismissed = excluded.is_dismissed
    """
)
"""PostgreSQL: one statement per chunk of users, the rows passed as four arrays."""
