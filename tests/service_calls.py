"""Helpers for the RPC tests of test_service*.py: stored row counts and a seeded catalogue."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from sqlalchemy import func, select

from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.v1 import catalog_pb2 as cat_pb
from tests.rpc import stubs

ALL_TABLES = [
    m.User,
    m.Item,
    m.Preference,
    m.Interaction,
    m.Recommendation,
    m.Impression,
    m.Feedback,
    m.ChurnPrediction,
    m.ModelArtifact,
]


def counts(db: Database, tables: Sequence[type[m.Base]] = ALL_TABLES) -> dict[str, int]:
    """Stored rows per table name."""
    with db.reader() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0 for t in tables}


def seed_catalogue(channel: grpc.Channel, n: int = 6) -> None:
    _, catalog = stubs(channel)
    items = [
        cat_pb.Item(
            item_id=f"i{k}",
            title=f"Item {k}",
            categories=["news" if k % 2 else "sport"],
            tags=["t"],
        )
        for k in range(n)
    ]
    catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=items), timeout=5)
