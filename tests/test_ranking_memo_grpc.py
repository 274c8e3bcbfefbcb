"""What ranking remembers of a cached context (model.user_memo) never outlives what it came
from, through a real server with a trained model: a dismissal or a view is honoured by the very
next call, also by a query the memo has answered before, and a model swap changes the lists at
once (each list is the one the active model ranks for the user, from scratch)."""

from __future__ import annotations

import grpc
import pytest

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.domain import Algorithm
from recgrpc.jobs.train import train
from recgrpc.model.recommender import TrainingParams
from recgrpc.server import RunningServer
from recgrpc.v1 import recommendation_pb2 as pb
from tests import test_recommender_serving as serving
from tests.rpc import stubs
from tests.test_recommender_serving import ids, recommend, wait_for, wait_for_model

pytestmark = pytest.mark.slow

# The serving tests' world: taste data, a trained active model, no re-ranking.
settings = serving.settings
taste = serving.taste
trained = serving.trained


def hits(server: RunningServer) -> float:
    found = server.metrics.registry.get_sample_value(
        "recgrpc_context_cache_lookups_total", {"result": "hit"}
    )
    return found or 0.0


def from_scratch(server: RunningServer, user: str, algorithm: Algorithm, limit: int) -> list[str]:
    """The list the server's active model ranks for ``user`` read afresh, remembering nothing."""
    context = server.handlers._read_context(user)
    query = domain.RecommendationQuery(user, limit, algorithm)
    return [item.item_id for item in server.handlers.engine.recommend(context, query).items]


def test_a_dismissal_or_a_view_is_honoured_by_the_next_call_of_a_remembered_query(
    trained: str, channel: grpc.Channel, server: RunningServer
) -> None:
    wait_for_model(channel, trained)
    rec, _ = stubs(channel)
    user = "u007"
    for round_ in range(3):
        first = ids(recommend(channel, user, "HYBRID"))
        before = hits(server)
        assert ids(recommend(channel, user, "HYBRID")) == first  # remembered
        page = ids(recommend(channel, user, "HYBRID", exclude_item_ids=first[:5]))
        assert hits(server) >= before + 2  # both from the cached context and its memo
        assert not set(first[:5]) & set(page)
        if round_ == 1:
            rec.LogInteraction(
                pb.LogInteractionRequest(
                    user_id=user, item_id=first[0], type=pb.INTERACTION_TYPE_VIEW
                ),
                timeout=5,
            )
        else:
            ack = rec.SubmitFeedback(
                pb.SubmitFeedbackRequest(user_id=user, item_id=first[0], dismissed=True), timeout=5
            )
            assert ack.recorded
        again = ids(recommend(channel, user, "HYBRID"))
        assert first[0] not in again
        assert first[0] not in ids(recommend(channel, user, "HYBRID", exclude_item_ids=first[5:6]))
        assert again == from_scratch(server, user, Algorithm.HYBRID, 10)


def test_lists_follow_a_model_swap_at_once(
    trained: str,
    channel: grpc.Channel,
    server: RunningServer,
    database: Database,
    settings: Settings,
) -> None:
    wait_for_model(channel, trained)
    users = [f"u{k:03d}" for k in range(0, 40, 4)]
    old = {u: from_scratch(server, u, Algorithm.HYBRID, 10) for u in users}
    for user in users:  # every one of them cached and remembered
        assert ids(recommend(channel, user, "HYBRID")) == old[user]
        assert ids(recommend(channel, user, "HYBRID")) == old[user]
    swapped = train(
        database, settings, progress=False, epochs=3, force=True,
        params=TrainingParams(components=8),
    ).version  # fmt: skip
    assert swapped != trained

    def served_everywhere() -> bool:
        # Asked all along: the users' cached contexts and memos meet the swap as it happens.
        return all(recommend(channel, u, "HYBRID").model_version == swapped for u in users)

    wait_for(served_everywhere)
    changed = 0
    for user in users:
        response = recommend(channel, user, "HYBRID")
        assert response.model_version == swapped
        assert ids(response) == from_scratch(server, user, Algorithm.HYBRID, 10)
        changed += ids(response) != old[user]
    assert changed > 0  # the new model ranks differently: no list was served from the old one
