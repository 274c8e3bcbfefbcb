"""After DeleteUser the id is a stranger everywhere: the serving model, every stored model
artifact and other running servers. An erased user who comes back with one event gets exactly
the list a brand-new user with the same event gets (through the real server)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import model_store as ms
from recgrpc.jobs.train import train
from recgrpc.model import artifact
from recgrpc.server import RunningServer, create_server
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.recommender_data import load, taste_data
from tests.rpc import stubs, ts

ERASED, FRESH = "u007", "newcomer"
WHEN = datetime.now(UTC) - timedelta(minutes=1)


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Pure model order, so the lists compare the model's view of each user and nothing else.
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
def trained(database: Database, settings: Settings) -> str:
    """Two models trained on taste data (one retired, one active); returns the active one."""
    load(database, taste_data(n_users=60, n_items=40))
    train(database, settings, progress=False, epochs=5, force=True)
    return train(database, settings, progress=False, epochs=10, force=True).version


@pytest.fixture
def replica(trained: str, settings: Settings) -> Iterator[RunningServer]:
    """A second server on the same database, serving the model from before the erasure."""
    running = create_server(settings)
    assert running.wait_ready(30)
    yield running
    running.stop(grace=1)


def _list(channel: grpc.Channel, user_id: str) -> list[tuple[str, float]]:
    rec, _ = stubs(channel)
    reply = rec.GetRecommendations(
        pb.GetRecommendationsRequest(user_id=user_id, algorithm=pb.ALGORITHM_HYBRID, limit=10),
        timeout=10,
    )
    return [(r.item_id, round(r.score, 5)) for r in reply.recommendations]


def _click(channel: grpc.Channel, user_id: str, item_id: str) -> None:
    rec, _ = stubs(channel)
    rec.LogInteraction(
        pb.LogInteractionRequest(
            event_id=f"{user_id}-back",
            user_id=user_id,
            item_id=item_id,
            type=pb.INTERACTION_TYPE_CLICK,
            occurred_at=ts(WHEN),
        ),
        timeout=10,
    )


def _wait_until(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_an_erased_user_is_a_stranger_everywhere(
    trained: str, server: RunningServer, replica: RunningServer, database: Database
) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        grpc.insecure_channel(f"127.0.0.1:{replica.port}") as other,
    ):
        rec, catalog = stubs(channel)
        assert _wait_until(
            lambda: (
                rec.GetRecommendations(
                    pb.GetRecommendationsRequest(user_id=ERASED), timeout=10
                ).model_version
                == trained
            )
        )
        personal = _list(channel, ERASED)
        assert _list(other, ERASED) == personal

        assert catalog.DeleteUser(cat_pb.DeleteUserRequest(user_id=ERASED), timeout=30).deleted

        # The same single event for the returning user and for someone new.
        item = "i005"
        _click(channel, ERASED, item)
        _click(channel, FRESH, item)
        stranger = _list(channel, FRESH)
        assert stranger != personal  # the comparison can tell the two apart
        returning = _list(channel, ERASED)
        shared = {i for i, _ in personal}
        assert returning == stranger, (  # at once, on the server that erased
            f"{len(shared & {i for i, _ in returning})} of the returning user's 10 items were in "
            f"their list before erasure; {len(shared & {i for i, _ in stranger})} of a new user's"
        )
        # Another server notices the rewritten artifact by itself.
        assert _wait_until(lambda: _list(other, ERASED) == _list(other, FRESH))
        assert _list(other, ERASED) == stranger

    with database.reader() as session:
        versions = ms.model_versions(session, ms.RECOMMENDER)
        assert len(versions) == 2
        for version in versions:
            stored = ms.load_model(session, version)
            assert stored is not None
            arrays = artifact.decode(stored.artifact)
            assert ERASED not in arrays.user_ids.tolist(), version
            assert f"user:{ERASED}" not in arrays.user_feature_names.tolist(), version
            assert "u008" in arrays.user_ids.tolist()  # nobody else was erased
            assert stored.params["revision"] == 1
