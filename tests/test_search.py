"""SearchItems through a real server: BM25 relevance, normalisation, synonyms, filters, the
no-match fallback, the index following catalogue changes, personal re-ranking, and SEARCH
events shaping a user's recommendations."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.jobs.train import train
from recgrpc.model.search import Synonyms, normalise
from recgrpc.server import RunningServer, create_server
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.recommender_data import TasteData, load, taste_data
from tests.rpc import bad_fields, stubs

CATALOGUE = [
    ("jazz-1", "Late Night Jazz Piano", ["jazz"], ["piano", "trio"]),
    ("jazz-2", "Blue Note Jazz Standards", ["jazz"], ["saxophone"]),
    ("rock-1", "Classic Rock Anthems", ["rock"], ["guitar"]),
    ("cafe-1", "Café Crème: Paris Bistro Songs", ["chanson"], ["accordion"]),
    ("buds-1", "Wireless Earbuds Pro", ["audio"], ["bluetooth"]),
    ("phones-1", "Studio Headphones", ["audio"], ["wired"]),
]


def wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def search(channel: grpc.Channel, query: str, **fields: object) -> pb.SearchItemsResponse:
    rec, _ = stubs(channel)
    return rec.SearchItems(pb.SearchItemsRequest(query=query, **fields), timeout=10)


def ids(reply: pb.SearchItemsResponse) -> list[str]:
    return [hit.item_id for hit in reply.items]


def upsert(channel: grpc.Channel, rows: list[tuple[str, str, list[str], list[str]]]) -> None:
    _, catalog = stubs(channel)
    items = [cat_pb.Item(item_id=i, title=t, categories=c, tags=g) for i, t, c, g in rows]
    catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=items), timeout=10)


@pytest.fixture
def catalogue(channel: grpc.Channel) -> grpc.Channel:
    upsert(channel, CATALOGUE)
    wait_for(lambda: ids(search(channel, "guitar")) == ["rock-1"])
    return channel


def test_normalisation_folds_case_accents_and_plurals() -> None:
    assert normalise("CAFÉS Crème") == normalise("cafe creme")
    assert normalise("Earbuds") == normalise("earbud")
    synonyms = Synonyms.parse("earbuds, earphones, in-ear headphones\n# a comment\nsolo\n")
    assert len(synonyms.groups) == 1
    assert synonyms.expand(normalise("cheap earphones")) == [
        tuple(normalise("earbuds")),
        tuple(normalise("in-ear headphones")),
    ]


def test_matches_rank_by_text_relevance(catalogue: grpc.Channel) -> None:
    reply = search(catalogue, "jazz piano")
    assert ids(reply)[0] == "jazz-1"  # both words; jazz-2 has one
    assert set(ids(reply)) == {"jazz-1", "jazz-2"}
    assert reply.fallback_reason == ""
    assert reply.recset_id
    first = reply.items[0]
    assert (first.rank, first.reason, first.title) == (1, "search", "Late Night Jazz Piano")
    assert list(first.categories) == ["jazz"]
    assert reply.items[0].score > reply.items[1].score > 0
    # Case, accents and plurals: "CAFES" finds "Café"; "pianos" finds "Piano".
    assert ids(search(catalogue, "  CAFES  ")) == ["cafe-1"]
    assert ids(search(catalogue, "pianos"))[0] == "jazz-1"


def test_categories_filter_and_limit(catalogue: grpc.Channel) -> None:
    assert ids(search(catalogue, "jazz rock", categories=["rock"])) == ["rock-1"]
    assert len(search(catalogue, "jazz rock", limit=1).items) == 1


def test_no_match_falls_back_to_trending_with_ok_status(
    catalogue: grpc.Channel, server: RunningServer
) -> None:
    registry = server.metrics.registry

    def fallbacks() -> float:
        labels = {"source": "trending", "fallback": "true"}
        return registry.get_sample_value("recgrpc_discovery_lists_total", labels) or 0.0

    before = fallbacks()
    reply = search(catalogue, "zzzz qqqq")
    assert fallbacks() == before + 1
    assert reply.fallback_reason == "no_search_matches"
    assert reply.items
    assert all(hit.reason == "trending" for hit in reply.items)
    assert {hit.item_id for hit in reply.items} <= {row[0] for row in CATALOGUE}


@pytest.mark.parametrize("query", ["", "   ", "x" * 256, "bad\x00query"])
def test_bad_queries_are_refused_naming_the_field(channel: grpc.Channel, query: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        search(channel, query)
    assert bad_fields(info.value) == ["query"]


def test_bad_fields_are_named_together(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        search(channel, "", limit=-1, exclude_seen=True, categories=["\x01"])
    assert set(bad_fields(info.value)) == {"query", "limit", "exclude_seen", "categories[0]"}


def test_the_index_follows_catalogue_changes(catalogue: grpc.Channel) -> None:
    upsert(catalogue, [("jazz-3", "Modal Jazz Trumpet", ["jazz"], [])])
    wait_for(lambda: "jazz-3" in ids(search(catalogue, "trumpet")))
    _, catalog = stubs(catalogue)
    gone = cat_pb.Item(item_id="jazz-1", title="Late Night Jazz Piano", active=False)
    catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=[gone]), timeout=10)
    wait_for(lambda: "jazz-1" not in ids(search(catalogue, "jazz piano")))
    assert ids(search(catalogue, "piano")) != ["jazz-1"]


@pytest.fixture
def synonym_server(settings: Settings, tmp_path: Path) -> Iterator[RunningServer]:
    path = tmp_path / "synonyms.txt"
    path.write_text("earbuds, earphones, in-ear headphones\n", encoding="utf-8")
    running = create_server(settings.replace(search_synonyms_file=str(path)))
    assert running.wait_ready(30)
    yield running
    running.stop(grace=1)


def test_synonyms_from_the_configured_file_expand_queries(synonym_server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{synonym_server.port}") as channel:
        upsert(channel, CATALOGUE)
        wait_for(lambda: search(channel, "earphones").fallback_reason == "")
        assert ids(search(channel, "earphones")) == ["buds-1"]
        # "in-ear headphones" brings earbuds (synonym) and headphones (a word of the phrase).
        assert set(ids(search(channel, "in-ear headphones"))) == {"buds-1", "phones-1"}


def test_without_synonyms_a_synonym_finds_nothing(catalogue: grpc.Channel) -> None:
    assert search(catalogue, "earphones").fallback_reason == "no_search_matches"


# -- with a trained model: personal re-ranking and searches in the profile ----------------------

GENRES = {"c0": "jazz", "c1": "rock", "c2": "folk", "c3": "blues", "c4": "techno", "c5": "soul"}


def genre_world() -> TasteData:
    """Taste data whose categories are music genres (so they can be searched for)."""
    data = taste_data(n_users=120, n_items=48)
    items = [
        replace(item, title=f"{GENRES[item.categories[0]]} album {item.item_id}",
                categories=[GENRES[c] for c in item.categories])
        for item in data.items
    ]  # fmt: skip
    users = [
        replace(u, preferences={GENRES[c]: s for c, s in u.preferences.items()}) for u in data.users
    ]
    taste = {u: tuple(GENRES[c] for c in cats) for u, cats in data.taste.items()}
    return TasteData(items=items, users=users, events=data.events, taste=taste)


@pytest.fixture
def trained_world(database: Database, settings: Settings) -> tuple[TasteData, str]:
    world = genre_world()
    load(database, world)
    return world, train(database, settings, progress=False, epochs=15).version


def recommended(channel: grpc.Channel, user: str) -> list[str]:
    rec, _ = stubs(channel)
    reply = rec.GetRecommendations(pb.GetRecommendationsRequest(user_id=user, limit=10), timeout=10)
    return [r.item_id for r in reply.recommendations]


def share_of(genre: str, item_ids: list[str], world: TasteData) -> float:
    genre_of = {it.item_id: it.categories[0] for it in world.items}
    return sum(genre_of[i] == genre for i in item_ids) / max(1, len(item_ids))


def log_search(channel: grpc.Channel, user: str, query: str, n: int) -> None:
    rec, _ = stubs(channel)
    reply = rec.LogInteraction(
        pb.LogInteractionRequest(
            event_id=f"{user}-search-{n}", user_id=user, type=pb.INTERACTION_TYPE_SEARCH,
            metadata={"query": query},
        ),
        timeout=10,
    )  # fmt: skip
    assert not reply.duplicate


def test_searches_raise_that_categorys_share_in_recommendations(
    trained_world: tuple[TasteData, str], server: RunningServer, channel: grpc.Channel
) -> None:
    world, version = trained_world
    wait_for(lambda: server.handlers.engine.snapshot.model_version == version)
    wait_for(lambda: len(server.handlers.search.index) == len(world.items))
    # A known user who never showed interest in jazz.
    user = next(u for u, cats in sorted(world.taste.items()) if "jazz" not in cats)
    before = share_of("jazz", recommended(channel, user), world)
    for n in range(3):
        log_search(channel, user, "Jazz albums", n)
    after = share_of("jazz", recommended(channel, user), world)
    assert after > before
    # And a brand-new user whose only activity is searching gets a list shaped by it
    # (re-ranking for diversity still mixes in other genres).
    trending = share_of("jazz", recommended(channel, "searcher"), world)
    for n in range(2):
        log_search(channel, "searcher", "jazz", n)
    assert share_of("jazz", recommended(channel, "searcher"), world) > max(trending, 0.3)


def test_search_is_re_ranked_for_the_user(
    trained_world: tuple[TasteData, str], server: RunningServer, channel: grpc.Channel
) -> None:
    world, version = trained_world
    wait_for(lambda: server.handlers.engine.snapshot.model_version == version)
    wait_for(lambda: len(server.handlers.search.index) == len(world.items))
    # "album" matches every item alike: the order then comes from the user's taste.
    user = next(u for u, cats in sorted(world.taste.items()))
    reply = search(channel, "album", user_id=user, limit=10)
    assert reply.model_version == version
    assert all(hit.reason == "search_personalised" for hit in reply.items)
    anonymous = search(channel, "album", limit=10)
    assert anonymous.model_version == ""
    assert anonymous.items[0].reason == "search"
    liked = world.taste[user]
    personal = sum(share_of(g, ids(reply), world) for g in liked)
    plain = sum(share_of(g, ids(anonymous), world) for g in liked)
    assert personal > plain


def test_exclude_seen_leaves_out_what_the_user_touched(
    trained_world: tuple[TasteData, str], server: RunningServer, channel: grpc.Channel
) -> None:
    world, _ = trained_world
    wait_for(lambda: len(server.handlers.search.index) == len(world.items))
    user = world.users[0].user_id
    seen = {e.item_id for e in world.events if e.user_id == user}
    reply = search(channel, "album", user_id=user, limit=100, exclude_seen=True)
    assert reply.items
    assert not seen & set(ids(reply))
    assert seen & set(ids(search(channel, "album", user_id=user, limit=100)))


def test_search_event_validation(channel: grpc.Channel) -> None:
    rec, _ = stubs(channel)
    cases = [
        ({"item_id": "x", "metadata": {"query": "jazz"}}, ["item_id"]),
        ({"metadata": {}}, ["metadata[query]"]),
        ({"metadata": {"query": " " * 3}}, ["metadata[query]"]),
        ({"metadata": {"query": "j" * 256}}, ["metadata[query]"]),
    ]
    for fields, expected in cases:
        request = pb.LogInteractionRequest(user_id="u", type=pb.INTERACTION_TYPE_SEARCH, **fields)
        with pytest.raises(grpc.RpcError) as info:
            rec.LogInteraction(request, timeout=10)
        assert bad_fields(info.value) == expected, fields
    # Other types still need an item.
    with pytest.raises(grpc.RpcError) as info:
        rec.LogInteraction(
            pb.LogInteractionRequest(user_id="u", type=pb.INTERACTION_TYPE_VIEW), timeout=10
        )
    assert bad_fields(info.value) == ["item_id"]
    assert domain.InteractionType.parse("search") is domain.InteractionType.SEARCH
