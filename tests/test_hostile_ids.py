"""SQL is always parameterised: ids that look like SQL or LIKE patterns are stored as plain data.

Every RPC receives hostile ids through the published client; afterwards the tables are intact,
each hostile id round-trips exactly, and erasing a user named ``%`` erases nobody else.
"""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import inspect, select

from recgrpc.client import (
    InvalidArgumentError,
    Item,
    NotFoundError,
    RecommendationClient,
    UnavailableError,
    User,
)
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.server import RunningServer

HOSTILE = [
    "'; DROP TABLE users;--",
    "Robert'); DROP TABLE items;--",
    '" OR ""="',
    "1 OR 1=1",
    "x' UNION SELECT user_id FROM users --",
    "%",
    "_",
    "a%b_c\\",
    "$1 ? :name %s",
    "ユーザー💥",
]


def test_hostile_ids_through_every_rpc(server: RunningServer, database: Database) -> None:
    tables_before = set(inspect(database.engine).get_table_names())
    with RecommendationClient(f"127.0.0.1:{server.port}") as client:
        client.upsert_users([User(user_id="alice", preferences={"news": 1.0})])
        client.upsert_items([Item(item_id="plain-item", categories=["news"])])
        assert client.upsert_items(
            [Item(item_id=h, title=h, categories=[h], tags=[h], attributes={h: h}) for h in HOSTILE]
        ) == len(HOSTILE)
        assert client.upsert_users(
            [User(user_id=h, attributes={h: h}, preferences={h: 0.5}) for h in HOSTILE]
        ) == len(HOSTILE)
        for n, h in enumerate(HOSTILE):
            logged = client.log_interaction(h, h, "click", event_id=f"{h}#{n}", metadata={h: h})
            assert logged.event_id == f"{h}#{n}"
            assert not logged.duplicate
            recs = client.get_recommendations(h, exclude_item_ids=[h], categories=[h, "news"])
            assert h not in [r.item_id for r in recs.items]
            assert client.submit_feedback(h, h, recset_id=recs.recset_id, dismissed=True)
            # No churn model in this test: a clean status, never a SQL error.
            with contextlib.suppress(NotFoundError, UnavailableError):
                client.predict_churn(h)
        with pytest.raises(InvalidArgumentError, match="user_id"):
            client.get_recommendations("nul\x00byte")

        assert client.delete_user("%")  # a LIKE wildcard must not match anyone else

    assert set(inspect(database.engine).get_table_names()) == tables_before
    with database.reader() as session:
        user_ids = set(session.scalars(select(m.User.user_id)))
        item_ids = set(session.scalars(select(m.Item.item_id)))
        event_ids = set(session.scalars(select(m.Interaction.event_id)))
    assert user_ids == {"alice", *HOSTILE} - {"%"}
    assert item_ids == {"plain-item", *HOSTILE}
    assert event_ids == {f"{h}#{n}" for n, h in enumerate(HOSTILE) if h != "%"}
