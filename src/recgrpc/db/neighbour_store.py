"""The ``item_neighbours`` table: each training run's neighbour artifact, by recommender version.

Stored in the same transaction as its recommender, so whichever recommender is active names
its own neighbour table and the two are never mixed up.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recgrpc.db import models as m


def store_neighbours(
    session: Session,
    *,
    recommender_version: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifact: bytes,
    now: datetime,
) -> None:
    session.add(
        m.ItemNeighbours(
            model_version=recommender_version,
            params=dict(params),
            metrics=dict(metrics),
            artifact=artifact,
            created_at=now,
        )
    )
    session.flush()


def load_neighbours(session: Session, recommender_version: str) -> bytes | None:
    """The artifact bytes built with ``recommender_version``, if it has one."""
    blob: bytes | None = session.scalar(
        select(m.ItemNeighbours.artifact).where(
            m.ItemNeighbours.model_version == recommender_version
        )
    )
    return None if blob is None else bytes(blob)
