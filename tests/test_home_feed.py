"""GetHomeFeed through a real server on each backend: the shelves, no item on two shelves,
shelf selection and size, impressions per shelf, and new or stale users without for_you."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, queries
from recgrpc.db import models as m
from recgrpc.jobs.train import train
from recgrpc.v1 import recommendation_pb2 as pb
from tests.recommender_data import TasteData, load, taste_data
from tests.rpc import stubs

NOW = datetime.now(UTC)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, host="127.0.0.1", port=0, metrics_port=0, refresh_seconds=0.3
    )


@pytest.fixture
def taste() -> TasteData:
    # Events over the last 91 days, so most users were active lately.
    return taste_data(n_users=100, n_items=120, n_categories=6, start=NOW - timedelta(days=91))


@pytest.fixture
def trained(database: Database, settings: Settings, taste: TasteData) -> str:
    load(database, taste)
    with database.writer() as s:
        # A user last seen 45 days ago (stale), with a preference that still counts.
        queries.upsert_users(s, [domain.User("old-timer", preferences={"c5": 1.0})], NOW)
        queries.insert_interactions(
            s,
            [
                domain.Interaction(
                    event_id=f"old-{n}",
                    user_id="old-timer",
                    item_id=f"i{n:03d}",
                    type=domain.InteractionType.LIKE,
                    occurred_at=NOW - timedelta(days=45 + n),
                )
                for n in range(5)
            ],
            NOW,
        )
    return train(database, settings, progress=False, epochs=10).version


def wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def feed(channel: grpc.Channel, user: str, **fields: object) -> pb.GetHomeFeedResponse:
    rec, _ = stubs(channel)
    return rec.GetHomeFeed(pb.GetHomeFeedRequest(user_id=user, **fields), timeout=10)


def _active_user(taste: TasteData) -> str:
    newest: dict[str, datetime] = {}
    for e in taste.events:
        newest[e.user_id] = max(newest.get(e.user_id, e.occurred_at), e.occurred_at)
    return max(newest, key=lambda u: newest[u])


def test_an_active_user_gets_every_shelf_each_its_own_list_and_no_item_twice(
    channel: grpc.Channel, database: Database, trained: str, taste: TasteData
) -> None:
    wait_for(lambda: feed(channel, "u000").model_version == trained)
    user = _active_user(taste)
    reply = feed(channel, user, shelf_size=5)
    kinds = [s.kind for s in reply.shelves]
    assert kinds[0] == pb.SHELF_KIND_FOR_YOU
    assert kinds[1] == pb.SHELF_KIND_BECAUSE_YOU_LIKED
    for kind in (pb.SHELF_KIND_TRENDING, pb.SHELF_KIND_NEW_ARRIVALS, pb.SHELF_KIND_DIVERSE_PICKS):
        assert kind in kinds
    assert 2 <= kinds.count(pb.SHELF_KIND_TOP_CATEGORIES) <= 3
    assert reply.fallback_reason == ""
    all_ids = [r.item_id for s in reply.shelves for r in s.items]
    assert len(all_ids) == len(set(all_ids))
    seen = {e.item_id for e in taste.events if e.user_id == user}
    assert not seen & set(all_ids)
    assert len({s.recset_id for s in reply.shelves}) == len(reply.shelves)
    for shelf in reply.shelves:
        assert 0 < len(shelf.items) <= 5
        assert shelf.title
    liked = next(s for s in reply.shelves if s.kind == pb.SHELF_KIND_BECAUSE_YOU_LIKED)
    anchor = liked.name.removeprefix("because_you_liked:")
    assert liked.title == f"Because you liked item {int(anchor[1:])}"
    newest_liked = max(
        (e for e in taste.events if e.user_id == user), key=lambda e: e.occurred_at
    ).item_id
    assert anchor == newest_liked
    cats = {i.item_id: i.categories[0] for i in taste.items}
    for shelf in reply.shelves:
        if shelf.kind == pb.SHELF_KIND_TOP_CATEGORIES:
            category = shelf.name.removeprefix("top_categories:")
            assert {cats[r.item_id] for r in shelf.items} == {category}
    diverse = next(s for s in reply.shelves if s.kind == pb.SHELF_KIND_DIVERSE_PICKS)
    engaged = {cats[i] for i in seen} | set(taste.taste[user])
    assert not {cats[r.item_id] for r in diverse.items} & engaged
    with database.reader() as s:
        stored = {i.recset_id: i for i in s.query(m.Impression).filter_by(user_id=user)}
    for shelf in reply.shelves:
        assert stored[shelf.recset_id].item_ids == [r.item_id for r in shelf.items]
    assert stored[reply.shelves[0].recset_id].algorithm == "HOME_FOR_YOU"


def test_shelves_and_size_are_chosen_by_the_request(
    channel: grpc.Channel, trained: str, taste: TasteData
) -> None:
    wait_for(lambda: feed(channel, "u000").model_version == trained)
    reply = feed(
        channel,
        _active_user(taste),
        shelf_size=3,
        shelves=[pb.SHELF_KIND_NEW_ARRIVALS, pb.SHELF_KIND_TRENDING],
        exclude_item_ids=["i119"],
    )
    assert [s.kind for s in reply.shelves] == [pb.SHELF_KIND_TRENDING, pb.SHELF_KIND_NEW_ARRIVALS]
    assert all(len(s.items) == 3 for s in reply.shelves)
    new = [r.item_id for r in reply.shelves[1].items]
    assert "i119" not in new  # the newest item, excluded
    created = {i.item_id: i.created_at for i in taste.items}
    assert [created[i] for i in new] == sorted((created[i] for i in new), reverse=True)


def test_stale_and_new_users_get_no_for_you_and_are_told_why(
    channel: grpc.Channel, trained: str
) -> None:
    wait_for(lambda: feed(channel, "u000").model_version == trained)
    stale = feed(channel, "old-timer")
    kinds = [s.kind for s in stale.shelves]
    assert pb.SHELF_KIND_FOR_YOU not in kinds
    assert "no activity in the last 30 days" in stale.fallback_reason
    tops = [s.name for s in stale.shelves if s.kind == pb.SHELF_KIND_TOP_CATEGORIES]
    assert tops[0] == "top_categories:c5"  # the preference still drives the category shelves
    stranger = feed(channel, "never-seen")
    assert pb.SHELF_KIND_FOR_YOU not in [s.kind for s in stranger.shelves]
    assert "a new user with no activity yet" in stranger.fallback_reason
    assert pb.SHELF_KIND_TRENDING in [s.kind for s in stranger.shelves]


def test_without_a_model_the_feed_says_which_shelves_it_cannot_fill(
    channel: grpc.Channel, database: Database, taste: TasteData
) -> None:
    load(database, taste)
    user = _active_user(taste)
    wait_for(lambda: pb.SHELF_KIND_TRENDING in [s.kind for s in feed(channel, user).shelves])
    reply = feed(channel, user, shelf_size=3)
    kinds = [s.kind for s in reply.shelves]
    assert pb.SHELF_KIND_FOR_YOU not in kinds
    assert pb.SHELF_KIND_BECAUSE_YOU_LIKED not in kinds
    assert "for_you left out: no trained model is active" in reply.fallback_reason
    assert "because_you_liked left out: no neighbour table is loaded" in reply.fallback_reason
    assert pb.SHELF_KIND_TRENDING in kinds
    tops = [s for s in reply.shelves if s.kind == pb.SHELF_KIND_TOP_CATEGORIES]
    assert tops
    assert all(r.reason == "trending" for s in tops for r in s.items)
