"""Discovery while the database is cut (the TCP proxy of test_faults): GetSimilarItems,
GetFrequentlyTogether and GetHomeFeed keep answering from the loaded neighbour table and model,
say why (fallback_reason), and answer as before once the database is back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.jobs.train import train
from recgrpc.server import RunningServer
from recgrpc.server.errors import DATABASE_DOWN
from recgrpc.v1 import recommendation_pb2 as pb
from tests.recommender_data import TasteData, load, taste_data
from tests.rpc import stubs
from tests.test_faults import (
    CuttableProxy,
    cut_and_noticed,
    eventually,
    postgres_url,
    proxy,
    serve_through,
)

__all__ = ["postgres_url", "proxy"]  # the fixtures this module borrows

NOW = datetime.now(UTC)


@pytest.fixture
def taste() -> TasteData:
    return taste_data(n_users=80, n_items=60, start=NOW - timedelta(days=60))


@pytest.fixture
def trained(postgres_url: str, taste: TasteData) -> str:
    db = Database(postgres_url)
    try:
        load(db, taste)
        settings = Settings(database_url=postgres_url)
        return train(db, settings, progress=False, epochs=5).version
    finally:
        db.dispose()


@pytest.fixture
def served(postgres_url: str, proxy: CuttableProxy, trained: str) -> Iterator[RunningServer]:
    """Started after training, so it loads the model and neighbour table at once."""
    yield from serve_through(proxy, postgres_url)


def test_similar_together_and_feed_answer_from_memory_while_the_database_is_cut(
    served: RunningServer, proxy: CuttableProxy, trained: str, taste: TasteData
) -> None:
    user = taste.users[0].user_id
    anchor = taste.events[0].item_id
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        rec, _ = stubs(channel)

        def similar() -> pb.GetSimilarItemsResponse:
            return rec.GetSimilarItems(
                pb.GetSimilarItemsRequest(item_id=anchor, user_id=user, limit=5), timeout=20
            )

        def together() -> pb.GetFrequentlyTogetherResponse:
            return rec.GetFrequentlyTogether(
                pb.GetFrequentlyTogetherRequest(item_ids=[anchor], user_id=user, limit=5),
                timeout=20,
            )

        def feed() -> pb.GetHomeFeedResponse:
            return rec.GetHomeFeed(pb.GetHomeFeedRequest(user_id=user), timeout=20)

        eventually(lambda: similar().model_version == trained)
        before = similar()
        assert DATABASE_DOWN not in before.fallback_reason
        assert DATABASE_DOWN not in feed().fallback_reason

        cut_and_noticed(proxy, served)
        for _ in range(3):
            cut_similar = similar()
            assert len(cut_similar.items) == 5
            assert anchor not in {i.item_id for i in cut_similar.items}
            assert DATABASE_DOWN in cut_similar.fallback_reason

            cut_together = together()
            assert len(cut_together.items) > 0
            assert anchor not in {i.item_id for i in cut_together.items}
            assert DATABASE_DOWN in cut_together.fallback_reason

            cut_feed = feed()
            assert cut_feed.shelves, "the feed still has shelves"
            assert all(shelf.items for shelf in cut_feed.shelves)
            assert DATABASE_DOWN in cut_feed.fallback_reason

        proxy.restore()
        eventually(lambda: DATABASE_DOWN not in similar().fallback_reason)
        assert DATABASE_DOWN not in together().fallback_reason
        assert DATABASE_DOWN not in feed().fallback_reason
        # Back to the user's own list: what they interacted with is filtered again.
        seen = {e.item_id for e in taste.events if e.user_id == user}
        assert not seen & {i.item_id for i in similar().items}
