"""The approximate-index path (large catalogues) serves what exact scoring serves: forced on for
a small catalogue, two real servers on one database give the same lists, filters included."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from recgrpc.config import Settings
from recgrpc.db import Database, model_store
from recgrpc.jobs.train import train
from recgrpc.model import artifact
from recgrpc.server import create_server
from recgrpc.v1 import recommendation_pb2 as pb
from tests.recommender_data import load, taste_data
from tests.test_recommender_serving import ids, recommend, wait_for_model

pytestmark = pytest.mark.slow


@pytest.fixture
def two_channels(database: Database, database_url: str) -> Iterator[tuple[grpc.Channel, ...]]:
    """An exact server and one with the index forced on (default re-ranking on both)."""
    data = taste_data(n_users=60, n_items=600, n_categories=8, events_per_user=25)
    load(database, data)
    base = Settings(database_url=database_url, host="127.0.0.1", port=0, metrics_port=0)
    version = train(database, base, progress=False, epochs=10).version
    # The index serves LightFM's scores alone (a model with an EASE part is ranked exactly), so
    # the blend training may have chosen is taken out: both servers then rank LightFM alone.
    with database.writer() as session:
        stored = model_store.load_model(session, version)
        assert stored is not None
        arrays = artifact.decode(stored.artifact)
        lightfm_only = replace(arrays, ease_items=None, ease_weights=None)
        model_store.rewrite_artifact(
            session, version, artifact.encode(lightfm_only), artifact.revision(arrays)
        )
    servers = [create_server(base.replace(ann_min_items=n)) for n in (0, 1)]
    channels = []
    try:
        for server in servers:
            assert server.wait_ready(60)
            channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
            channels.append(channel)
            wait_for_model(channel, version)
        yield tuple(channels)
    finally:
        for channel in channels:
            channel.close()
        for server in servers:
            server.stop(grace=1)


def test_forced_approximate_index_gives_the_exact_top_10(
    two_channels: tuple[grpc.Channel, grpc.Channel],
) -> None:
    exact, approximate = two_channels
    for user in [f"u{u:03d}" for u in range(0, 60, 6)]:
        for source in ("HYBRID", "CONTENT"):  # CONTENT from its own index of content vectors
            want = recommend(exact, user, source)
            got = recommend(approximate, user, source)
            assert len(ids(want)) == 10
            assert_same_list(got, want)
            assert got.algorithm == want.algorithm == pb.Algorithm.Value(f"ALGORITHM_{source}")

    # Filters stay exact: excluded items never come back, a category filter holds.
    user = "u007"
    first = ids(recommend(exact, user, "HYBRID"))
    excluded = first[:5]
    want = recommend(exact, user, "HYBRID", exclude_item_ids=excluded)
    got = recommend(approximate, user, "HYBRID", exclude_item_ids=excluded)
    assert_same_list(got, want)
    assert not set(excluded) & set(ids(got))
    want = recommend(exact, user, "HYBRID", categories=["c3"])
    got = recommend(approximate, user, "HYBRID", categories=["c3"])
    assert_same_list(got, want)
    assert len(ids(got)) == 10
    want = recommend(exact, user, "CONTENT", exclude_item_ids=excluded)
    got = recommend(approximate, user, "CONTENT", exclude_item_ids=excluded)
    assert_same_list(got, want)
    assert not set(excluded) & set(ids(got))


def assert_same_list(
    got: pb.GetRecommendationsResponse, want: pb.GetRecommendationsResponse
) -> None:
    """The same items in the same order, except that two items whose scores agree to float32
    rounding may trade places (the index re-scores its candidates in a different summation
    order than the whole-catalogue product)."""
    assert len(got.recommendations) == len(want.recommendations)
    for g, w in zip(got.recommendations, want.recommendations, strict=True):
        # abs: float32 rounding of a sum of terms near 1 is ~1e-7 however small the score is.
        assert g.score == pytest.approx(w.score, rel=1e-4, abs=1e-5)
        if g.item_id != w.item_id:
            assert g.score == pytest.approx(w.score, rel=1e-5, abs=1e-6), (ids(got), ids(want))
