"""The served model refitted on every pair, its holdout twin for the gate, and the selection table
``recgrpc train`` prints."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import model_store as ms
from recgrpc.db import training_data as td
from recgrpc.jobs.train import TrainingReport, format_training_report, train
from recgrpc.model import artifact
from recgrpc.model.evaluation import evaluate, sample_users, temporal_holdout
from recgrpc.model.features import build_interaction_data
from recgrpc.model.representations import ModelView
from recgrpc.model.scoring import view_scores
from recgrpc.model.training import FINAL_EVALUATION_USERS, K, user_rows
from recgrpc.model.training_blend import holdout_history, holdout_twin
from tests.recommender_data import load, taste_data

NOW = datetime(2021, 6, 1, tzinfo=UTC)


@pytest.fixture
def trained(database: Database, database_url: str) -> tuple[Database, Settings, TrainingReport]:
    settings = Settings(database_url=database_url, diversity=0.0, freshness_boost=0.0)
    load(database, taste_data(n_users=120, n_items=48))
    return database, settings, train(database, settings, progress=False, epochs=8, now=NOW)


def _stored(database: Database) -> artifact.RecommenderArrays:
    with database.reader() as session:
        stored = ms.active_model(session, ms.RECOMMENDER)
    assert stored is not None
    return artifact.decode(stored.artifact)


def test_served_model_learned_the_newest_positives_and_the_gate_scores_its_twin(
    trained: tuple[Database, Settings, TrainingReport],
) -> None:
    database, settings, report = trained
    served = _stored(database)
    assert served.holdout_fit is not None
    twin = artifact.holdout_twin_lightfm(served)
    # The served LightFM saw each user's newest positives; its twin stopped before them.
    assert (served.user_trained_until >= twin.user_trained_until).all()
    assert (served.user_trained_until > twin.user_trained_until).any()
    assert not np.allclose(served.user_feature_embeddings, twin.user_feature_embeddings)
    # What train reported is the twin's score on the holdout, recomputed here from the store.
    with database.reader() as session:
        rows = td.load_training_rows(session)
    data = build_interaction_data(rows, settings)
    holdout = temporal_holdout(data)
    view = ModelView.build(holdout_twin(served, data, holdout), rows.items)
    scores = view_scores(view, user_rows(rows, data), holdout_history(view, data, holdout))
    users = sample_users(holdout.users, FINAL_EVALUATION_USERS, seed=1)
    assert evaluate(scores, holdout, k=K, users=users).ndcg == pytest.approx(report.model.ndcg)


def test_retraining_on_the_same_data_compares_twins_on_the_same_holdout(
    trained: tuple[Database, Settings, TrainingReport],
) -> None:
    database, settings, first = trained
    again = train(database, settings, progress=False, epochs=8)
    assert again.active is not None
    # The active model is scored as its twin: exactly what its own training reported.
    assert again.active.ndcg == pytest.approx(first.model.ndcg, abs=1e-6)


def test_the_twin_round_trips_and_an_erased_user_leaves_it_too(
    trained: tuple[Database, Settings, TrainingReport],
) -> None:
    database, _, _ = trained
    served = _stored(database)
    assert served.holdout_fit is not None
    back = artifact.decode(artifact.encode(served))
    assert back.holdout_fit is not None
    for name in artifact.HOLDOUT_FIT:
        np.testing.assert_array_equal(back.holdout_fit[name], served.holdout_fit[name])
    user = str(served.user_ids[0])
    purged = artifact.without_user(served, user)
    assert purged is not None
    assert purged.holdout_fit is not None
    twin = artifact.holdout_twin_lightfm(purged)
    assert twin.user_feature_embeddings.shape == purged.user_feature_embeddings.shape
    assert twin.user_trained_until.shape == (served.user_ids.shape[0] - 1,)
    row = served.holdout_fit["user_feature_embeddings"][0]
    assert not any(np.array_equal(row, r) for r in twin.user_feature_embeddings)
    broken = dict(served.holdout_fit)
    broken["user_feature_biases"] = broken["user_feature_biases"][:-1]
    with pytest.raises(ValueError, match="holdout twin"):
        artifact.validate(replace(served, holdout_fit=broken))


def test_train_prints_every_candidate_in_an_aligned_table_with_the_choice_marked(
    trained: tuple[Database, Settings, TrainingReport],
) -> None:
    _, _, report = trained
    assert report.selection is not None
    lines = format_training_report(report).splitlines()
    start = lines.index("candidates on the holdout:")
    header = lines[start + 1]
    assert header.split() == ["candidate", "positives", "lambda", "scale", "half-life", "alpha",
                              "NDCG@10"]  # fmt: skip
    rows = lines[start + 2 : start + 2 + len(report.selection.candidates)]
    score_end = header.index("NDCG@10") + len("NDCG@10")
    for row in rows:
        # Every score stands in its own column, spaced from the label before it.
        assert re.fullmatch(r"\s\d\.\d{4}", row[score_end - 7 : score_end]), row
    marked = [row for row in rows if row.endswith("<- selected")]
    assert len(marked) == 1
    assert f"{report.selection.ndcg:.4f}" in marked[0]
