"""GetSimilarItems and GetFrequentlyTogether through a real server on each backend: training
builds and stores the neighbour table, every mode answers, filters hold, impressions are stored
so feedback is attributed, inactive and cold items, and the fallbacks say why."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from werkzeug.test import Client

from recgrpc import domain
from recgrpc.cli import main
from recgrpc.config import Settings
from recgrpc.dashboard import Capabilities
from recgrpc.dashboard.sources import Sources
from recgrpc.dashboard.web import DashboardApp
from recgrpc.db import Database, neighbour_store, queries
from recgrpc.db import models as m
from recgrpc.jobs.train import train
from recgrpc.model import neighbour_artifact
from recgrpc.server import RunningServer
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.recommender_data import TasteData, load, taste_data
from tests.rpc import stubs

CALLER_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
MODES = {
    "AUTO": pb.SIMILARITY_MODE_AUTO,
    "BEHAVIOUR": pb.SIMILARITY_MODE_BEHAVIOUR,
    "CONTENT": pb.SIMILARITY_MODE_CONTENT,
    "EMBEDDING": pb.SIMILARITY_MODE_EMBEDDING,
}
REASONS = {
    "BEHAVIOUR": {"also_liked"},
    "CONTENT": {"similar_content"},
    "EMBEDDING": {"similar_embedding"},
}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, host="127.0.0.1", port=0, metrics_port=0, refresh_seconds=0.3
    )


@pytest.fixture
def taste() -> TasteData:
    return taste_data(n_users=120, n_items=48)


@pytest.fixture
def trained(database: Database, settings: Settings, taste: TasteData) -> str:
    load(database, taste)
    return train(database, settings, progress=False, epochs=10).version


def wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def similar(channel: grpc.Channel, item: str, **fields: object) -> pb.GetSimilarItemsResponse:
    rec, _ = stubs(channel)
    return rec.GetSimilarItems(pb.GetSimilarItemsRequest(item_id=item, **fields), timeout=5)


def wait_for_neighbours(channel: grpc.Channel, version: str) -> None:
    wait_for(lambda: similar(channel, "i000").model_version == version)


def test_training_stores_the_neighbour_table_with_its_recommender(
    database: Database, trained: str, taste: TasteData
) -> None:
    with database.reader() as s:
        blob = neighbour_store.load_neighbours(s, trained)
        row = s.get(m.ItemNeighbours, trained)
    assert blob is not None
    assert row is not None
    arrays = neighbour_artifact.decode(blob)
    assert arrays.version == trained
    assert arrays.item_ids == tuple(sorted(i.item_id for i in taste.items))
    assert row.metrics["items_with_behaviour_neighbours"] == len(taste.items)
    assert int(arrays.behaviour.counts().max()) <= Settings().neighbours_k


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_lists_neighbours_never_the_item_itself(
    channel: grpc.Channel, trained: str, taste: TasteData, mode: str
) -> None:
    wait_for_neighbours(channel, trained)
    reply = similar(channel, "i006", mode=MODES[mode], limit=8)
    ids = [r.item_id for r in reply.items]
    assert len(ids) == 8
    assert "i006" not in ids
    assert len(set(ids)) == len(ids)
    assert [r.rank for r in reply.items] == list(range(1, 9))
    assert reply.mode == MODES[mode]
    assert reply.fallback_reason == ""
    assert reply.recset_id
    if mode in REASONS:
        assert {r.reason for r in reply.items} == REASONS[mode]
    if mode == "CONTENT":  # same category and tag family first: i006 is c0 like i000, i012...
        top = next(i for i in taste.items if i.item_id == ids[0])
        assert top.categories == ["c0"]


def test_a_user_gets_unseen_items_and_the_list_is_an_impression_feedback_finds(
    channel: grpc.Channel, database: Database, trained: str, taste: TasteData
) -> None:
    wait_for_neighbours(channel, trained)
    user = "u001"
    seen = {e.item_id for e in taste.events if e.user_id == user}
    reply = similar(
        channel, "i003", user_id=user, limit=10, exclude_item_ids=["i009"], categories=["c3", "c4"]
    )
    ids = [r.item_id for r in reply.items]
    assert ids
    assert not seen & set(ids)
    assert "i009" not in ids
    cats = {i.item_id: i.categories[0] for i in taste.items}
    assert {cats[i] for i in ids} <= {"c3", "c4"}
    with database.reader() as s:
        stored = s.get(m.Impression, reply.recset_id)
    assert stored is not None
    assert (stored.user_id, stored.algorithm) == (user, "SIMILAR_AUTO")
    assert stored.item_ids == ids
    rec, _ = stubs(channel)
    rec.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            user_id=user, item_id=ids[0], recset_id=reply.recset_id, clicked=True
        ),
        timeout=5,
    )
    with database.reader() as s:
        sources = queries.impression_sources(s.connection(), {reply.recset_id})
    assert sources[reply.recset_id][0] == "SIMILAR_AUTO"


def test_unknown_item_is_not_found(channel: grpc.Channel, trained: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        similar(channel, "no-such-item")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    rec, _ = stubs(channel)
    with pytest.raises(grpc.RpcError) as caught:
        rec.GetFrequentlyTogether(
            pb.GetFrequentlyTogetherRequest(item_ids=["i000", "nope"]), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_inactive_item_still_has_neighbours_but_inactive_items_are_never_listed(
    channel: grpc.Channel, trained: str
) -> None:
    wait_for_neighbours(channel, trained)
    before = [r.item_id for r in similar(channel, "i006", mode=MODES["BEHAVIOUR"]).items]
    _, cat = stubs(channel)
    gone = [before[0], "i006"]
    cat.UpsertItems(
        cat_pb.UpsertItemsRequest(
            items=[cat_pb.Item(item_id=i, title=f"item {i}", active=False) for i in gone]
        ),
        timeout=5,
    )

    def refreshed() -> bool:
        return before[0] not in {r.item_id for r in similar(channel, "i000", limit=100).items}

    wait_for(refreshed)
    after = similar(channel, "i006", mode=MODES["BEHAVIOUR"])
    ids = [r.item_id for r in after.items]
    assert ids
    assert not set(gone) & set(ids)
    assert ids[0] == before[1]


def test_a_new_item_gets_content_neighbours_and_says_why(
    channel: grpc.Channel, trained: str
) -> None:
    wait_for_neighbours(channel, trained)
    _, cat = stubs(channel)
    cat.UpsertItems(
        cat_pb.UpsertItemsRequest(
            items=[
                cat_pb.Item(item_id="fresh", title="brand new", categories=["c2"], tags=["c2-t1"])
            ]
        ),
        timeout=5,
    )
    wait_for(lambda: "fresh" in {r.item_id for r in similar(channel, "i002", limit=100).items})
    reply = similar(channel, "fresh", mode=MODES["BEHAVIOUR"], limit=5)
    assert reply.mode == MODES["AUTO"]
    assert "behaviour requested" in reply.fallback_reason
    assert reply.items
    assert reply.items[0].reason == "similar_content"
    assert reply.items[0].item_id in {f"i{n:03d}" for n in range(2, 48, 6)}


def test_without_a_model_similar_items_are_trending_with_the_reason(
    channel: grpc.Channel, database: Database, taste: TasteData
) -> None:
    load(database, taste)
    wait_for(lambda: len(similar(channel, "i000").items) > 0)
    reply = similar(channel, "i000")
    assert reply.fallback_reason == "no trained model is active: trending instead"
    assert {r.reason for r in reply.items} == {"trending"}
    assert "i000" not in {r.item_id for r in reply.items}


# -- frequently together ----------------------------------------------------------------------

CART = {"phone": ["case", "charger"], "camera": ["tripod", "card"]}


def _sessions(now: datetime) -> tuple[list[domain.Item], list[domain.Interaction]]:
    """Shoppers buying a phone with its case or charger, a camera with a tripod or card, within
    minutes; between sessions days pass, and everyone also looks at a popular poster."""
    names = ["phone", "case", "charger", "camera", "tripod", "card", "poster", "lamp"]
    items = [domain.Item(item_id=n, title=n, categories=["shop"]) for n in names]
    events: list[domain.Interaction] = []
    for u in range(40):
        start = now - timedelta(days=60 - u)
        main = "phone" if u % 2 else "camera"
        extra = CART[main][u % 4 // 2]
        plan = [
            (main, 0),
            (extra, 10),
            ("poster", 60 * 24 * 3),
            ("lamp" if u % 5 == 0 else "poster", 60 * 24 * 6),
        ]
        for n, (item, minutes) in enumerate(plan):
            events.append(
                domain.Interaction(
                    event_id=f"s{u}-{n}",
                    user_id=f"shopper{u}",
                    item_id=item,
                    type=domain.InteractionType.PURCHASE,
                    occurred_at=start + timedelta(minutes=minutes),
                )
            )
    return items, events


def test_frequently_together_ranks_session_partners_for_an_item_and_a_basket(
    channel: grpc.Channel, database: Database, settings: Settings
) -> None:
    now = datetime.now(UTC)
    items, events = _sessions(now)
    with database.writer() as s:
        queries.upsert_items(s, items, now)
        queries.insert_interactions(s, events, now)
    version = train(database, settings, progress=False, epochs=3).version
    rec, _ = stubs(channel)

    def together(*basket: str, **fields: object) -> pb.GetFrequentlyTogetherResponse:
        request = pb.GetFrequentlyTogetherRequest(item_ids=list(basket), **fields)
        return rec.GetFrequentlyTogether(request, timeout=5)

    wait_for(lambda: together("phone").model_version == version)
    phone = together("phone")
    assert {r.item_id for r in phone.items} == {"case", "charger"}
    assert {r.reason for r in phone.items} == {"frequently_together"}
    assert phone.fallback_reason == ""
    # The poster is bought by everyone days later: no rule (other session, and lift <= 1).
    basket = together("phone", "tripod", limit=3)
    ids = [r.item_id for r in basket.items]
    assert "phone" not in ids
    assert "tripod" not in ids
    assert set(ids) <= {"case", "charger", "camera"}
    assert "camera" in ids
    with database.reader() as s:
        assert s.get(m.Impression, basket.recset_id) is None  # no user: nothing to attribute
    mine = together("phone", user_id="shopper1")
    with database.reader() as s:
        stored = s.get(m.Impression, mine.recset_id)
    assert stored is not None
    assert stored.algorithm == "TOGETHER_RULES"
    lonely = together("lamp")
    assert lonely.fallback_reason.startswith("no frequently-together rules")
    assert "lamp" not in {r.item_id for r in lonely.items}


known_items = st.sampled_from([f"i{n:03d}" for n in range(48)])
known_users = st.one_of(st.just(""), st.sampled_from([f"u{n:03d}" for n in range(120)]))
TRAINED_REQUESTS = {
    "GetSimilarItems": st.builds(
        pb.GetSimilarItemsRequest,
        item_id=known_items,
        limit=st.integers(-5, 500),
        user_id=known_users,
        exclude_item_ids=st.lists(known_items, max_size=50),
        categories=st.lists(st.sampled_from(["c0", "c1", "c9", ""]), max_size=3),
        mode=st.integers(-1, 6),
    ),
    "GetFrequentlyTogether": st.builds(
        pb.GetFrequentlyTogetherRequest,
        item_ids=st.lists(known_items, max_size=110),
        limit=st.integers(-5, 500),
        user_id=known_users,
        exclude_item_ids=st.lists(known_items, max_size=50),
    ),
    "GetHomeFeed": st.builds(
        pb.GetHomeFeedRequest,
        user_id=st.one_of(known_users, st.just("nobody")),
        shelf_size=st.integers(-5, 500),
        shelves=st.lists(st.integers(-1, 8), max_size=8),
        exclude_item_ids=st.lists(known_items, max_size=48),
    ),
}


RESPONSES: dict[str, Any] = {
    "GetSimilarItems": pb.GetSimilarItemsResponse,
    "GetFrequentlyTogether": pb.GetFrequentlyTogetherResponse,
    "GetHomeFeed": pb.GetHomeFeedResponse,
}


@pytest.mark.parametrize("method", sorted(TRAINED_REQUESTS))
def test_random_requests_with_a_trained_model_get_only_caller_codes(
    channel: grpc.Channel, trained: str, method: str
) -> None:
    """The ranking paths (not only validation) under random valid and invalid field values:
    every answer is OK, INVALID_ARGUMENT or NOT_FOUND, and an OK list obeys its filters."""
    wait_for_neighbours(channel, trained)
    call = channel.unary_unary(f"/recgrpc.v1.RecommendationService/{method}")

    @hypothesis_settings(
        max_examples=50,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(request=TRAINED_REQUESTS[method])
    def check(request: Any) -> None:
        future = call.future(request.SerializeToString(), timeout=30)
        code = future.code()
        assert code in CALLER_CODES, (method, request, code, future.details())
        if code != grpc.StatusCode.OK:
            return
        reply = RESPONSES[method].FromString(future.result())
        lists = [s.items for s in reply.shelves] if method == "GetHomeFeed" else [reply.items]
        listed = [r.item_id for items in lists for r in items]
        assert len(listed) == len(set(listed))
        assert not set(request.exclude_item_ids) & set(listed)

    check()


def test_similar_command_prints_what_the_rpc_returns(
    server: RunningServer,
    channel: grpc.Channel,
    trained: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wait_for_neighbours(channel, trained)
    target = ["--target", f"127.0.0.1:{server.port}"]
    assert main(["similar", "i006", "--mode", "content", "--limit", "3", *target]) == 0
    out = capsys.readouterr().out.splitlines()
    reply = similar(channel, "i006", mode=MODES["CONTENT"], limit=3)
    assert out[0].startswith(f"items similar to i006 (mode content, model {trained}, recset ")
    rows = [line.split() for line in out[2:]]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        (str(i.rank), i.item_id, i.reason) for i in reply.items
    ]
    assert main(["similar", "nope", *target]) == 1
    assert "'nope' is not in the catalogue" in capsys.readouterr().err


def test_the_dashboards_item_inspector_lists_neighbours_per_mode(
    server: RunningServer, channel: grpc.Channel, trained: str
) -> None:
    """The inspector's neighbour sections come from GetSimilarItems' own path (what `recgrpc
    serve` wires in), without recording an impression."""
    wait_for_neighbours(channel, trained)
    capabilities = Capabilities(similar_items=server.handlers.discovery.preview_similar)
    client = Client(DashboardApp(Sources(server.handlers, capabilities), tokens=None))
    html = client.get("/items?item_id=i006").get_data(as_text=True)
    for mode, number in (("behaviour", "BEHAVIOUR"), ("content", "CONTENT")):
        assert f'data-title="Neighbours by {mode}"' in html
        first = similar(channel, "i006", mode=MODES[number], limit=10).items[0].item_id
        assert f'href="/items?item_id={first}"' in html
