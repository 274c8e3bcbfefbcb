"""One rating scale, configurable (default 0.5-5 stars), enforced on every way ratings get in:
LogInteraction's RATING value, SubmitFeedback's rating and the CSV import."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.jobs.importer import ImportKind, ImportRefused, import_file
from recgrpc.server import RunningServer, create_server
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.validation import RatingScale
from tests.rpc import bad_fields, stubs


@pytest.fixture
def ten_point_server(settings: Settings) -> Iterator[RunningServer]:
    running = create_server(settings.replace(rating_min=1.0, rating_max=10.0))
    assert running.wait_ready(30)
    yield running
    running.stop(grace=1)


def rate(channel: grpc.Channel, stars: float) -> list[str]:
    """Rates item i1 by both RPCs; the fields refused (empty when both were accepted)."""
    rec, catalog = stubs(channel)
    catalog.UpsertItems(cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id="i1")]), timeout=5)
    refused: list[str] = []
    calls = [
        (
            rec.LogInteraction,
            pb.LogInteractionRequest(
                user_id="u", item_id="i1", type=pb.INTERACTION_TYPE_RATING, value=stars
            ),
        ),
        (rec.SubmitFeedback, pb.SubmitFeedbackRequest(user_id="u", item_id="i1", rating=stars)),
    ]
    for call, request in calls:
        try:
            call(request, timeout=5)
        except grpc.RpcError as exc:
            refused += bad_fields(exc)
    return refused


def test_default_scale_is_half_a_star_to_five(channel: grpc.Channel) -> None:
    assert rate(channel, 0.5) == []
    assert rate(channel, 5) == []
    assert rate(channel, 9) == ["value", "rating"]
    assert rate(channel, 0.4) == ["value", "rating"]


def test_a_configured_scale_is_what_the_server_accepts(ten_point_server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{ten_point_server.port}") as channel:
        assert rate(channel, 9) == []
        assert rate(channel, 0.5) == ["value", "rating"]
        assert rate(channel, 10.5) == ["value", "rating"]


def test_csv_ratings_follow_the_scale(database: Database, tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,type,value,occurred_at\nu,i1,rating,9,1767225600\n")
    with pytest.raises(ImportRefused) as refused:
        import_file(database, ImportKind.INTERACTIONS, path)
    assert "from 0.5 to 5" in refused.value.problems[0].reason
    report = import_file(database, ImportKind.INTERACTIONS, path, ratings=RatingScale(1, 10))
    assert report.new_rows == 1


def test_a_scale_that_makes_no_sense_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="rating_min"):
        Settings.from_env({"RECGRPC_RATING_MIN": "5", "RECGRPC_RATING_MAX": "1"})
    assert Settings.from_env({}).rating_min == 0.5
    assert Settings.from_env({}).rating_max == 5.0
