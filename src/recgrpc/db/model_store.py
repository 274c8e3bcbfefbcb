"""The ``models`` table: versioned artifacts of every kind (recommender, churn) and their status.

One model per kind is active; servers poll ``active_model_version`` (one indexed query) and fetch
the artifact bytes only when the version changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from recgrpc.db import models as m

RECOMMENDER = "recommender"
CHURN = "churn"
CANDIDATE = "candidate"
ACTIVE = "active"
RETIRED = "retired"
REVISION = "revision"
"""The ``params`` key of a rewritten artifact's revision (as ``model.artifact.REVISION``)."""


@dataclass(frozen=True)
class StoredModel:
    version: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    artifact: bytes
    created_at: datetime
    activated_at: datetime | None


def active_model_version(session: Session, kind: str) -> str | None:
    """The active model's version only: the cheap query servers poll."""
    version: str | None = session.scalar(
        select(m.ModelArtifact.version)
        .where(m.ModelArtifact.kind == kind, m.ModelArtifact.status == ACTIVE)
        .order_by(m.ModelArtifact.activated_at.desc(), m.ModelArtifact.id.desc())
        .limit(1)
    )
    return version


def active_model_stamp(session: Session, kind: str) -> tuple[str, int] | None:
    """The active model's version and revision (``params["revision"]``, raised each time its
    artifact is rewritten, as when a user is erased): what servers poll to reload."""
    row = session.execute(
        select(m.ModelArtifact.version, m.ModelArtifact.params)
        .where(m.ModelArtifact.kind == kind, m.ModelArtifact.status == ACTIVE)
        .order_by(m.ModelArtifact.activated_at.desc(), m.ModelArtifact.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return row.version, int((row.params or {}).get(REVISION, 0))


def model_versions(session: Session, kind: str) -> list[str]:
    """Every stored version of ``kind``, whatever its status, oldest first."""
    return list(
        session.scalars(
            select(m.ModelArtifact.version)
            .where(m.ModelArtifact.kind == kind)
            .order_by(m.ModelArtifact.id)
        )
    )


def rewrite_artifact(session: Session, version: str, artifact: bytes, revision: int) -> None:
    """Replace a stored artifact's bytes (same version, status and metrics) at ``revision``."""
    row = session.scalar(
        select(m.ModelArtifact).where(m.ModelArtifact.version == version).with_for_update()
    )
    if row is None:
        return
    row.artifact = artifact
    row.params = {**(row.params or {}), REVISION: revision}
    session.flush()


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


def active_model(session: Session, kind: str) -> StoredModel | None:
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
    """Insert a candidate model (not served until ``activate_model``)."""
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


def store_active_model(
    session: Session,
    *,
    kind: str,
    version: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifact: bytes,
    now: datetime,
) -> None:
    """Store a model and make it the active one of its kind (no promotion gate)."""
    store_model(
        session,
        kind=kind,
        version=version,
        params=params,
        metrics=metrics,
        artifact=artifact,
        now=now,
    )
    activate_model(session, kind, version, now)


def model_summary(session: Session, version: str) -> tuple[datetime, dict[str, Any]] | None:
    """``(created_at, metrics)`` of a stored model, without reading its artifact bytes."""
    row = session.execute(
        select(m.ModelArtifact.created_at, m.ModelArtifact.metrics).where(
            m.ModelArtifact.version == version
        )
    ).first()
    return None if row is None else (row[0], dict(row[1] or {}))
