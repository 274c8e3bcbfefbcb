"""The typed client's discovery calls, blocking and asyncio, against a real server on each
backend: results as dataclasses, field violations and NOT_FOUND as typed errors."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from recgrpc.client import (
    AsyncRecommendationClient,
    ClientArgumentError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    RecommendationClient,
    ShelfKind,
    SimilarityMode,
)
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.jobs.train import train
from recgrpc.server import RunningServer
from tests.recommender_data import TasteData, load, taste_data

NOW = datetime.now(UTC)


@pytest.fixture
def taste() -> TasteData:
    return taste_data(n_users=80, n_items=60, start=NOW - timedelta(days=91))


@pytest.fixture
def trained_server(
    database: Database, settings: Settings, taste: TasteData, server: RunningServer
) -> RunningServer:
    load(database, taste)
    version = train(database, settings, progress=False, epochs=8).version
    with RecommendationClient(f"127.0.0.1:{server.port}") as client:
        for _ in range(150):
            if client.similar_items("i000").model_version == version:
                break
            time.sleep(0.1)
    return server


def test_blocking_client_discovery_calls(trained_server: RunningServer) -> None:
    with RecommendationClient(f"127.0.0.1:{trained_server.port}") as client:
        similar = client.similar_items("i001", limit=4, mode="content", user_id="u002")
        assert similar.mode == SimilarityMode.CONTENT
        assert len(similar.item_ids) == 4
        assert "i001" not in similar.item_ids
        assert {i.reason for i in similar.items} == {"similar_content"}
        assert similar.generated_at.tzinfo is not None
        together = client.frequently_together(["i001", "i002"], limit=3)
        assert together.recset_id
        assert not {"i001", "i002"} & set(together.item_ids)
        feed = client.home_feed("u003", shelf_size=4, shelves=[ShelfKind.TRENDING, "for_you"])
        assert [s.kind for s in feed.shelves] == [ShelfKind.FOR_YOU, ShelfKind.TRENDING]
        trending = feed.shelf("trending")
        assert trending is not None
        assert len(trending.item_ids) == 4
        assert not set(trending.item_ids) & set(feed.shelves[0].item_ids)
        with pytest.raises(NotFoundError):
            client.similar_items("missing")


def test_async_client_discovery_calls(trained_server: RunningServer) -> None:
    async def scenario() -> None:
        async with AsyncRecommendationClient(f"127.0.0.1:{trained_server.port}") as client:
            similar = await client.similar_items("i001", mode=SimilarityMode.BEHAVIOUR)
            assert similar.mode == SimilarityMode.BEHAVIOUR
            assert len(similar.items) == 10
            together = await client.frequently_together("i005")
            assert "i005" not in together.item_ids
            feed = await client.home_feed("stranger")
            assert ShelfKind.FOR_YOU not in [s.kind for s in feed.shelves]
            assert "new user" in feed.fallback_reason
            with pytest.raises(InvalidArgumentError) as refused:
                await client.home_feed("", shelf_size=-1)
            assert {v.field for v in refused.value.field_violations} == {"user_id", "shelf_size"}
            with pytest.raises(NotFoundError):
                await client.frequently_together(["i001", "missing"])

    asyncio.run(scenario())


def test_bad_fields_are_named(server: RunningServer) -> None:
    with RecommendationClient(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(InvalidArgumentError) as refused:
            client.similar_items("")
        assert refused.value.field_violations == (FieldViolation("item_id", "is required"),)
        with pytest.raises(InvalidArgumentError) as refused:
            client.similar_items("i1", limit=-3, user_id="x" * 129, categories=["ok", ""])
        fields = {v.field for v in refused.value.field_violations}
        assert fields == {"limit", "user_id", "categories[1]"}
        with pytest.raises(InvalidArgumentError) as refused:
            client.frequently_together([f"i{n}" for n in range(101)])
        assert [v.field for v in refused.value.field_violations] == ["item_ids"]
        with pytest.raises(InvalidArgumentError) as refused:
            client.frequently_together([])
        assert [v.field for v in refused.value.field_violations] == ["item_ids"]
        with pytest.raises(ClientArgumentError) as unknown:
            client.similar_items("i1", mode="nearest")
        assert unknown.value.field_violations[0].field == "mode"
        with pytest.raises(ClientArgumentError) as unknown:
            client.home_feed("u1", shelves=["front_page"])
        assert unknown.value.field_violations[0].field == "shelves[0]"
