"""Serving the trained recommender through a real gRPC server: sources, cold start, fold-in,
exclusions and a hot model swap under concurrent load."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, queries
from recgrpc.db import model_store as ms
from recgrpc.jobs.online_metrics import online_metrics_since
from recgrpc.jobs.train import train
from recgrpc.model.recommender import TrainingParams
from recgrpc.server import RunningServer
from recgrpc.server.snapshot import build_snapshot
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.recommender_data import TasteData, load, taste_data
from tests.rpc import stubs

ALGORITHMS = {
    "AUTO": pb.ALGORITHM_AUTO,
    "HYBRID": pb.ALGORITHM_HYBRID,
    "COLLABORATIVE": pb.ALGORITHM_COLLABORATIVE,
    "CONTENT": pb.ALGORITHM_CONTENT,
    "POPULAR": pb.ALGORITHM_POPULAR,
}


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Pure model order (no diversity or freshness re-ranking) so lists are easy to reason about.
    return Settings(
        database_url=database_url,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        refresh_seconds=0.3,
        diversity=0.0,
        freshness_boost=0.0,
    )


@pytest.fixture
def taste() -> TasteData:
    return taste_data(n_users=120, n_items=48)


@pytest.fixture
def trained(database: Database, settings: Settings, taste: TasteData) -> str:
    """Taste data loaded and a model trained and active; returns its version."""
    load(database, taste)
    return train(database, settings, progress=False, epochs=15).version


def recommend(
    channel: grpc.Channel, user: str, algorithm: str = "AUTO", limit: int = 10, **fields: object
) -> pb.GetRecommendationsResponse:
    rec, _ = stubs(channel)
    request = pb.GetRecommendationsRequest(
        user_id=user, algorithm=ALGORITHMS[algorithm], limit=limit, **fields
    )
    return rec.GetRecommendations(request, timeout=5)


def wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def wait_for_model(channel: grpc.Channel, version: str) -> None:
    wait_for(lambda: recommend(channel, "u000", "HYBRID").model_version == version)


def ids(response: pb.GetRecommendationsResponse) -> list[str]:
    return [r.item_id for r in response.recommendations]


def category_of(taste: TasteData) -> dict[str, str]:
    return {it.item_id: it.categories[0] for it in taste.items}


def test_new_item_reaches_matching_users_before_anyone_touches_it(
    trained: str, channel: grpc.Channel, taste: TasteData
) -> None:
    wait_for_model(channel, trained)
    _, catalog = stubs(channel)
    catalog.UpsertUsers(
        cat_pb.UpsertUsersRequest(
            users=[
                cat_pb.User(user_id="fan-c2", preferences={"c2": 1.0}),
                cat_pb.User(user_id="fan-c0", preferences={"c0": 1.0}),
            ]
        ),
        timeout=5,
    )
    item = cat_pb.Item(item_id="brand-new", title="New", categories=["c2"], tags=["c2-t0"])
    catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=[item]), timeout=5)
    wait_for(lambda: "brand-new" in ids(recommend(channel, "fan-c2", "CONTENT")))

    cats = category_of(taste)
    for algorithm in ("CONTENT", "HYBRID", "AUTO"):
        response = recommend(channel, "fan-c2", algorithm)
        assert "brand-new" in ids(response), algorithm
        assert response.model_version == trained
        assert response.fallback_reason == ""
    # AUTO serves a user with preferences but no history by content.
    auto = recommend(channel, "fan-c2", "AUTO")
    assert auto.algorithm == pb.ALGORITHM_CONTENT
    assert {r.reason for r in auto.recommendations} == {"content"}
    # The new item goes to users whose preferences match, not to everyone.
    other = ids(recommend(channel, "fan-c0", "CONTENT", limit=8))
    assert "brand-new" not in other
    assert {cats[i] for i in other} == {"c0"}
    # Behaviour alone cannot rank an item nobody touched.
    assert "brand-new" not in ids(recommend(channel, "u000", "COLLABORATIVE", limit=48))


def test_a_new_users_first_clicks_change_their_next_list(
    trained: str, channel: grpc.Channel, taste: TasteData
) -> None:
    wait_for_model(channel, trained)
    first = recommend(channel, "newbie")
    assert first.algorithm == pb.ALGORITHM_POPULAR
    assert first.fallback_reason  # says why: nothing known about the user yet
    cats = category_of(taste)
    c4 = [i for i in sorted(cats) if cats[i] == "c4"]
    rec, _ = stubs(channel)
    clicked = c4[:3]
    for n, item in enumerate(clicked):
        rec.LogInteraction(
            pb.LogInteractionRequest(
                event_id=f"newbie-{n}", user_id="newbie", item_id=item,
                type=pb.INTERACTION_TYPE_CLICK,
            ),
            timeout=5,
        )  # fmt: skip
    second = recommend(channel, "newbie")
    assert second.algorithm == pb.ALGORITHM_HYBRID
    assert second.model_version == trained
    assert ids(second) != ids(first)
    assert not set(clicked) & set(ids(second))
    share = sum(cats[i] == "c4" for i in ids(second))
    assert share > sum(cats[i] == "c4" for i in ids(first))
    assert share >= 5  # the clicks define the taste: most of the list is c4


def test_each_source_is_distinct_and_says_what_it_used(trained: str, channel: grpc.Channel) -> None:
    wait_for_model(channel, trained)
    lists = {}
    for name in ("HYBRID", "COLLABORATIVE", "CONTENT", "POPULAR"):
        response = recommend(channel, "u000", name)
        assert response.algorithm == ALGORITHMS[name]
        assert response.fallback_reason == ""
        reason = "trending" if name == "POPULAR" else name.lower()
        assert {r.reason for r in response.recommendations} == {reason}
        assert response.model_version == ("" if name == "POPULAR" else trained)
        scores = [r.score for r in response.recommendations]
        assert scores == sorted(scores, reverse=True)
        lists[name] = ids(response)
    assert len({tuple(v) for v in lists.values()}) == 4
    # The history is from 2021: trending counts back from its newest event, not from today.
    assert recommend(channel, "u000", "POPULAR").recommendations[0].score > 0
    assert recommend(channel, "u000").algorithm == pb.ALGORITHM_HYBRID

    _, catalog = stubs(channel)
    catalog.UpsertUsers(
        cat_pb.UpsertUsersRequest(users=[cat_pb.User(user_id="fan-c1", preferences={"c1": 1})]),
        timeout=5,
    )
    fallback = recommend(channel, "fan-c1", "COLLABORATIVE")
    assert fallback.algorithm == pb.ALGORITHM_HYBRID
    assert "collaborative" in fallback.fallback_reason
    nobody = recommend(channel, "nobody", "CONTENT")
    assert nobody.algorithm == pb.ALGORITHM_POPULAR
    assert "content" in nobody.fallback_reason


def test_seen_dismissed_and_excluded_items_never_come_back(
    trained: str, channel: grpc.Channel, taste: TasteData
) -> None:
    wait_for_model(channel, trained)
    user = "u001"
    seen = {e.item_id for e in taste.events if e.user_id == user}
    shown = recommend(channel, user, "HYBRID")
    dismissed, excluded = ids(shown)[:2]
    rec, _ = stubs(channel)
    rec.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            user_id=user, item_id=dismissed, recset_id=shown.recset_id, dismissed=True
        ),
        timeout=5,
    )
    for name in ALGORITHMS:
        got = set(ids(recommend(channel, user, name, limit=100, exclude_item_ids=[excluded])))
        assert got, name
        assert not got & seen, name
        assert dismissed not in got, name
        assert excluded not in got, name


def test_model_swap_during_concurrent_requests_fails_none(
    trained: str, channel: grpc.Channel, database: Database, settings: Settings
) -> None:
    wait_for_model(channel, trained)
    versions: list[str] = []
    served_at: list[datetime] = []
    errors: list[grpc.RpcError] = []
    stop = threading.Event()
    algorithms = list(ALGORITHMS)

    def client(n: int) -> None:
        k = 0
        while not stop.is_set():
            user = f"u{(n * 37 + k) % 120:03d}"
            try:
                response = recommend(channel, user, algorithms[k % len(algorithms)])
                if response.algorithm != pb.ALGORITHM_POPULAR:
                    versions.append(response.model_version)
                    served_at.append(response.generated_at.ToDatetime(UTC))
            except grpc.RpcError as exc:
                errors.append(exc)
            k += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        swapped = train(
            database, settings, progress=False, epochs=2, force=True,
            params=TrainingParams(components=16),
        ).version  # fmt: skip
        wait_for(lambda: swapped in versions[-20:])
        served_before = len(versions)
        swap_seen = time.monotonic()
        # Keep serving well past the swap, so lists generated after it are there to judge.
        wait_for(
            lambda: (
                len(versions) >= max(200, served_before + 50) and time.monotonic() - swap_seen > 1.5
            )
        )
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert len(versions) >= 200
    assert trained in versions
    assert swapped in versions
    # Lists generated (well) after the first one from the new model all come from it.
    first_new = min(t for t, v in zip(served_at, versions, strict=True) if v == swapped)
    later = {
        v
        for t, v in zip(served_at, versions, strict=True)
        if t > first_new + timedelta(seconds=0.5)
    }
    assert later == {swapped}


def test_a_corrupt_active_artifact_leaves_the_previous_model_serving(
    trained: str, channel: grpc.Channel, database: Database
) -> None:
    wait_for_model(channel, trained)
    now = datetime.now(UTC)
    with database.writer() as session:
        ms.store_model(
            session, kind=ms.RECOMMENDER, version="broken", params={}, metrics={},
            artifact=b"PK\x03\x04 truncated", now=now,
        )  # fmt: skip
        ms.activate_model(session, ms.RECOMMENDER, "broken", now)
    time.sleep(1.0)  # several refresh periods
    for _ in range(5):
        response = recommend(channel, "u000", "HYBRID")
        assert response.model_version == trained
        assert response.recommendations


def test_online_metrics_count_clicks_and_hits_per_algorithm_and_version(
    trained: str, server: RunningServer, channel: grpc.Channel, database: Database
) -> None:
    wait_for_model(channel, trained)
    started = datetime.now(UTC)
    served = recommend(channel, "u002", "HYBRID")
    popular = recommend(channel, "u003", "POPULAR", limit=5)
    first, second = ids(served)[:2]
    rec, _ = stubs(channel)
    rec.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            user_id="u002", item_id=first, recset_id=served.recset_id, clicked=True
        ),
        timeout=5,
    )
    rec.LogInteraction(
        pb.LogInteractionRequest(
            user_id="u002", item_id=second, type=pb.INTERACTION_TYPE_PURCHASE,
            recset_id=served.recset_id,
        ),
        timeout=5,
    )  # fmt: skip
    server.handlers.served_lists.flush()  # impressions are written behind the reply
    with database.reader() as session:
        rows = {(r.algorithm, r.model_version): r for r in online_metrics_since(session, started)}
    hybrid = rows[("HYBRID", trained)]
    assert (hybrid.impressions, hybrid.items_shown) == (1, len(served.recommendations))
    assert (hybrid.clicks, hybrid.hits) == (1, 1)
    assert hybrid.click_through_rate == pytest.approx(1 / len(served.recommendations))
    trending = rows[("POPULAR", "")]
    assert (trending.items_shown, trending.clicks, trending.hits) == (
        len(popular.recommendations), 0, 0,
    )  # fmt: skip


def test_an_erased_user_is_not_personalised_by_the_model_any_more(
    trained: str, channel: grpc.Channel
) -> None:
    wait_for_model(channel, trained)
    assert recommend(channel, "u004").algorithm == pb.ALGORITHM_HYBRID
    _, catalog = stubs(channel)
    assert catalog.DeleteUser(cat_pb.DeleteUserRequest(user_id="u004"), timeout=5).deleted
    after = recommend(channel, "u004")
    assert after.algorithm == pb.ALGORITHM_POPULAR
    assert after.fallback_reason
    hybrid = recommend(channel, "u004", "HYBRID")
    assert hybrid.algorithm == pb.ALGORITHM_POPULAR


def test_a_refresh_reads_the_catalogue_again_only_after_it_changed(
    trained: str, database: Database, settings: Settings
) -> None:
    first = build_snapshot(database, settings, datetime.now(UTC))
    again = build_snapshot(database, settings, datetime.now(UTC), first)
    assert again.catalog is first.catalog  # nothing written: the same catalogue object
    assert again.model is first.model
    assert again.model is not None
    assert again.model.version == trained

    with database.writer() as session:
        queries.upsert_items(
            session, [domain.Item("i-brand-new", categories=("c0",))], datetime.now(UTC)
        )
    changed = build_snapshot(database, settings, datetime.now(UTC), again)
    assert "i-brand-new" in changed.catalog.position
    assert changed.model is not None
    assert changed.model.hybrid.shape[0] == len(changed.catalog)  # re-aligned with it


def test_a_refresh_counts_trending_events_again_only_after_they_changed(
    trained: str, database: Database, settings: Settings
) -> None:
    first = build_snapshot(database, settings, datetime.now(UTC))
    at = int(first.trending.argmin())
    item = first.catalog.item_ids[at]
    before = float(first.trending[at])
    again = build_snapshot(database, settings, datetime.now(UTC), first)
    assert float(again.trending[at]) == pytest.approx(before)

    now = datetime.now(UTC)
    events = [
        domain.Interaction(f"e-trend-{n}", "u-trend", item, domain.InteractionType.PURCHASE, now)
        for n in range(5)
    ]
    with database.writer() as session:
        queries.insert_interactions(session, events, now)
    risen = build_snapshot(database, settings, datetime.now(UTC), again)
    assert float(risen.trending[at]) > before

    with database.writer() as session:
        queries.delete_user(session, "u-trend")
    fallen = build_snapshot(database, settings, datetime.now(UTC), risen)
    assert float(fallen.trending[at]) == pytest.approx(before)
