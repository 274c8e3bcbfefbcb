"""Training and serving score a user's items alike: the one scoring function (model.scoring)
behind training's evaluation, the top-N lists written after training, and GetRecommendations."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import grpc
import numpy as np
import pytest
from sqlalchemy import select

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import model_store as ms
from recgrpc.db import models as m
from recgrpc.db import training_data as td
from recgrpc.jobs.train import train
from recgrpc.model import artifact
from recgrpc.model.features import build_interaction_data
from recgrpc.model.representations import ModelView
from recgrpc.model.scoring import view_scores
from recgrpc.model.training import user_rows
from recgrpc.model.training_blend import full_history
from recgrpc.v1 import recommendation_pb2 as pb
from tests.recommender_data import TasteData, load, taste_data
from tests.rpc import stubs

USERS = 8


def _settled_users(data: TasteData) -> TasteData:
    """``data`` plus users whose every event trains the model (fewer than the holdout needs),
    and users known only by their preferences: neither has anything to fold in at serving, so
    their served scores are exactly the scores training computed."""
    start = data.events[0].occurred_at
    users = list(data.users)
    events = list(data.events)
    for k in range(USERS // 2):
        users.append(domain.User(user_id=f"prefers-{k}", preferences={f"c{k}": 1.0}))
        user_id = f"settled-{k}"
        users.append(domain.User(user_id=user_id, attributes={"tier": "t0"}))
        for n, item in enumerate((f"i{k:03d}", f"i{k + 6:03d}")):
            events.append(
                domain.Interaction(
                    event_id=f"{user_id}-e{n}",
                    user_id=user_id,
                    item_id=item,
                    type=domain.InteractionType.LIKE,
                    occurred_at=start + timedelta(days=n),
                )
            )
    return replace(data, users=users, events=events)


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Model order only: re-ranking for diversity or freshness changes the served scores.
    return Settings(
        database_url=database_url,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        refresh_seconds=0.3,
        diversity=0.0,
        freshness_boost=0.0,
    )


def _served(channel: grpc.Channel, user_id: str, version: str) -> pb.GetRecommendationsResponse:
    rec, _ = stubs(channel)
    request = pb.GetRecommendationsRequest(user_id=user_id, algorithm=pb.ALGORITHM_HYBRID, limit=20)
    deadline = time.monotonic() + 15
    while True:
        response = rec.GetRecommendations(request, timeout=5)
        if response.model_version == version:
            return response
        assert time.monotonic() < deadline, "the server never loaded the trained model"
        time.sleep(0.1)


def test_training_top_n_evaluation_and_serving_scores_agree(
    database: Database, settings: Settings, channel: grpc.Channel
) -> None:
    load(database, _settled_users(taste_data(n_users=60, n_items=40)))
    report = train(database, settings, progress=False, epochs=3)
    assert report.promoted
    assert report.lists_written > 0
    rec_table = m.Recommendation
    with database.reader() as session:
        stored = {
            (user_id, item_id): score
            for user_id, item_id, score in session.execute(
                select(rec_table.user_id, rec_table.item_id, rec_table.score).where(
                    rec_table.model_version == report.version
                )
            )
        }
        rows = td.load_training_rows(session)
        active = ms.active_model(session, ms.RECOMMENDER)
    assert active is not None
    assert active.version == report.version
    # Training's evaluation path: the serving view of the stored artifact, scored in a batch.
    data = build_interaction_data(rows, settings)
    view = ModelView.build(artifact.decode(active.artifact), rows.items)
    # With the model's EASE part, blended from each user's stored history as the top-N is.
    evaluation = view_scores(view, user_rows(rows, data), full_history(view, data))
    users = sorted({u for u, _ in stored if u.startswith(("prefers-", "settled-"))})
    assert len(users) == USERS

    compared = 0
    for user_id in users:
        batch = evaluation(np.array([data.user_ids.index(user_id)], dtype=np.int64))[0]
        served = _served(channel, user_id, report.version)
        assert served.algorithm == pb.ALGORITHM_HYBRID
        assert served.recommendations
        for item in served.recommendations:
            at_evaluation = float(batch[data.item_ids.index(item.item_id)])
            assert item.score == pytest.approx(at_evaluation, abs=1e-5)
            if (user_id, item.item_id) in stored:
                assert item.score == pytest.approx(stored[(user_id, item.item_id)], abs=1e-5)
                compared += 1
    # The served lists are the written top-N (same scores, same exclusions), not a few overlaps.
    assert compared >= USERS * 10
