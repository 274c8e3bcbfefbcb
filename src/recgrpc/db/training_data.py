"""Bulk reads and writes for training, promotion and evaluation (one SELECT per table, no
per-row queries). Each function takes a Session owned by the caller."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from recgrpc.db import models as m
from recgrpc.db.queries import catalogue

RECOMMENDER = "recommender"
CANDIDATE = "candidate"
ACTIVE = "active"
RETIRED = "retired"


@dataclass(frozen=True)
class TrainingRows:
    """Everything training reads from the database, as plain tuples."""

    items: list[tuple[str, list[str], list[str], datetime]]
    users: list[tuple[str, dict[str, str]]]
    preferences: list[tuple[str, str, float]]
    interactions: list[tuple[str, str, str, float, datetime]]
    """(user_id, item_id, type, value, occurred_at)"""
    feedback: list[tuple[str, str, bool, bool, float | None, datetime]]
    """(user_id, item_id, clicked, dismissed, rating, created_at)"""


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


# -- models table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredModel:
    version: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    artifact: bytes
    created_at: datetime
    activated_at: datetime | None


def active_model_version(session: Session, kind: str = RECOMMENDER) -> str | None:
    """The active model's version only: the cheap query servers poll."""
    version: str | None = session.scalar(
        select(m.ModelArtifact.version)
        .where(m.ModelArtifact.kind == kind, m.ModelArtifact.status == ACTIVE)
        .order_by(m.ModelArtifact.activated_at.desc())
        .limit(1)
    )
    return version


def load_model(session: Session, version: str) -> StoredModel | None:
    row = session.scalar(select(m.ModelArtifact).where(m.ModelArtifact.version == version))
    if row is None:
        return None
    return StoredModel(
        version=row.version,
        status=row.status,
        params=dict(row.params or {}),
        metrics=dict(row.metrics or {}),
        artifact=bytes(row.artifact),
        created_at=row.created_at,
        activated_at=row.activated_at,
    )


def active_model(session: Session, kind: str = RECOMMENDER) -> StoredModel | None:
    version = active_model_version(session, kind)
    return None if version is None else load_model(session, version)


def store_model(
    session: Session,
    *,
    kind: str,
    version: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifact: bytes,
    now: datetime,
) -> None:
    """Insert a candidate model."""
    session.add(
        m.ModelArtifact(
            kind=kind,
            version=version,
            status=CANDIDATE,
            params=dict(params),
            metrics=dict(metrics),
            artifact=artifact,
            created_at=now,
        )
    )
    session.flush()


def activate_model(session: Session, kind: str, version: str, now: datetime) -> None:
    """Retire the active model of ``kind`` and make ``version`` active, in one transaction."""
    session.execute(
        update(m.ModelArtifact)
        .where(m.ModelArtifact.kind == kind, m.ModelArtifact.status == ACTIVE)
        .values(status=RETIRED)
    )
    session.execute(
        update(m.ModelArtifact)
        .where(m.ModelArtifact.version == version)
        .values(status=ACTIVE, activated_at=now)
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
    for start in range(0, len(user_ids), 500):
        chunk = list(user_ids[start : start + 500])
        session.execute(delete(table).where(table.c.user_id.in_(chunk)))
    finite = np.isfinite(top_scores)
    ranks = np.arange(1, top_items.shape[1] + 1)
    rows = [
        {
            "user_id": user_id,
            "item_id": item_ids[item],
            "rank": int(rank),
            "score": float(score),
            "algorithm": algorithm,
            "model_version": model_version,
            "recset_id": "",
            "generated_at": generated_at,
            "is_clicked": False,
            "is_dismissed": False,
        }
        for user_id, items, scores, ok in zip(user_ids, top_items, top_scores, finite, strict=True)
        for item, score, rank, good in zip(items.tolist(), scores.tolist(), ranks, ok, strict=True)
        if good
    ]
    for start in range(0, len(rows), 20_000):
        session.execute(insert(table), rows[start : start + 20_000])
