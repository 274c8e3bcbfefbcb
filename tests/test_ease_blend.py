"""The EASE part of the recommender: the closed-form fit, the blend, the artifact and the request
step, plus what ``recgrpc train`` reports of its choice on the holdout."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import model_store as ms
from recgrpc.jobs.train import format_training_report, train
from recgrpc.model import artifact, ease
from recgrpc.model.blend import blend, normalise
from recgrpc.model.ease_view import EaseView
from recgrpc.model.weights import EventWeights
from tests.recommender_data import load, taste_data

NOW = datetime(2021, 6, 1, tzinfo=UTC)


def _pairs(rows: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    users, items = np.array(rows, dtype=np.int32).T
    return users, items


def test_ease_ranks_the_item_liked_together_first() -> None:
    # Items 0 and 1 go together; 2 and 3 go together; item 4 is liked by everyone.
    rows = [(u, i) for u in range(6) for i in (0, 1, 4)] + [
        (u, i) for u in range(6, 12) for i in (2, 3, 4)
    ]
    users, items = _pairs(rows)
    covered = ease.popular_items(users, items, 5, limit=5)
    model = ease.fit(users, items, 12, covered, lam_scale=0.1)
    history = ease.history_matrix(
        np.array([0], dtype=np.int32), np.array([0], dtype=np.int32), np.array([1.0]),
        (1, 5), half_life=math.inf,
    )  # fmt: skip
    scores = ease.scores(model, history)[0]
    assert np.diag(model.weights).tolist() == [0.0] * 5
    assert int(np.argmax(np.where(np.arange(5) == 0, -np.inf, scores))) == 1
    assert scores[1] > scores[2]
    assert scores[1] > scores[3]


def test_popular_items_keeps_the_most_liked() -> None:
    users, items = _pairs([(0, 3), (1, 3), (2, 3), (0, 1), (1, 1), (0, 2)])
    assert ease.popular_items(users, items, 5, limit=2).tolist() == [1, 3]
    assert ease.popular_items(users, items, 5, limit=10).tolist() == [1, 2, 3]


def test_history_weighs_each_users_events_by_their_own_recency() -> None:
    # User 0's events are years older than user 1's: both newest events weigh 1.
    users = np.array([0, 0, 0, 1, 1], dtype=np.int32)
    items = np.array([0, 1, 2, 0, 3], dtype=np.int32)
    times = np.array([1.0, 2.0, 3.0, 9e8, 9e8 + 1])
    h = ease.history_matrix(users, items, times, (2, 4), half_life=1.0).toarray()
    assert h[0].tolist() == [0.25, 0.5, 1.0, 0.0]
    assert h[1].tolist() == [0.5, 0.0, 0.0, 1.0]
    capped = ease.history_matrix(users, items, times, (2, 4), half_life=1.0, limit=1).toarray()
    assert np.count_nonzero(capped[0]) == 1


def test_normalise_puts_the_median_at_zero_and_the_tenth_best_at_one() -> None:
    scores = np.arange(100, dtype=np.float32)[None, :] * np.array([[1.0], [1000.0]], np.float32)
    out = normalise(scores)
    for row in out:
        assert row[50] == pytest.approx(0.0)
        assert row[90] == pytest.approx(1.0)
    flat = np.zeros(20, dtype=np.float32)
    assert np.isfinite(normalise(flat)).all()
    small, large = scores[0], scores[1]
    assert blend(small, large, 1.0) is small
    # Both rows normalise to the same values, so any mix of them is that too.
    np.testing.assert_allclose(blend(small, large, 0.5), out[0], rtol=1e-5, atol=1e-6)


@pytest.fixture
def trained(database: Database, database_url: str) -> tuple[Database, Settings, str]:
    settings = Settings(database_url=database_url, diversity=0.0, freshness_boost=0.0)
    load(database, taste_data(n_users=120, n_items=48))
    report = train(database, settings, progress=False, epochs=8, now=NOW)
    out = format_training_report(report)
    assert report.selection is not None
    assert f"selected on the holdout: {report.selection.describe()}" in out
    # LightFM alone, then every EASE configuration and blend weight that was scored.
    assert len(report.selection.candidates) >= 2
    assert out.count("\n  ") >= len(report.selection.candidates)
    assert "LightFM alone" in out
    return database, settings, report.version


def test_training_stores_its_choice_and_every_candidate(
    trained: tuple[Database, Settings, str],
) -> None:
    database, _, version = trained
    with database.reader() as session:
        stored = ms.active_model(session, ms.RECOMMENDER)
    assert stored is not None
    assert stored.version == version
    selection = stored.metrics["selection"]
    assert selection["candidates"][0]["alpha"] == 1.0
    assert all(math.isfinite(c["ndcg"]) for c in selection["candidates"])
    arrays = artifact.decode(stored.artifact)
    assert "blend_alpha" in arrays.params
    assert (arrays.ease_items is None) == (arrays.params["blend_alpha"] >= 1.0)


def _with_ease_part(arrays: artifact.RecommenderArrays) -> artifact.RecommenderArrays:
    ids = arrays.item_ids[:3]
    weights = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    params = {**arrays.params, "blend_alpha": 0.0, "ease_half_life": 0.0}
    return replace(arrays, ease_items=ids, ease_weights=weights, params=params)


def test_artifact_round_trips_the_ease_part_and_refuses_a_broken_one(
    trained: tuple[Database, Settings, str],
) -> None:
    database, _, _ = trained
    with database.reader() as session:
        stored = ms.active_model(session, ms.RECOMMENDER)
    assert stored is not None
    arrays = _with_ease_part(artifact.decode(stored.artifact))
    back = artifact.decode(artifact.encode(arrays))
    assert back.ease_items is not None
    assert back.ease_weights is not None
    assert back.ease_items.tolist() == arrays.ease_items.tolist()  # type: ignore[union-attr]
    np.testing.assert_array_equal(back.ease_weights, arrays.ease_weights)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ease_weights has shape"):
        artifact.validate(replace(arrays, ease_weights=np.zeros((3, 2), dtype=np.float32)))
    with pytest.raises(ValueError, match="ease_items"):
        artifact.validate(replace(arrays, ease_items=np.array(["nope", "x", "y"])))


def test_request_step_scores_the_newest_events_at_once(
    trained: tuple[Database, Settings, str],
) -> None:
    database, settings, _ = trained
    with database.reader() as session:
        stored = ms.active_model(session, ms.RECOMMENDER)
    assert stored is not None
    arrays = _with_ease_part(artifact.decode(stored.artifact))
    ids = arrays.item_ids.tolist()
    positions = {iid: n for n, iid in enumerate(ids)}
    view = EaseView.build(arrays, positions)
    assert view is not None
    lightfm = np.zeros(len(ids), dtype=np.float32)

    def context(*events: tuple[str, domain.InteractionType, float]) -> domain.UserContext:
        recent = tuple(
            domain.RecentInteraction(i, kind, value, NOW + timedelta(minutes=-n))
            for n, (i, kind, value) in enumerate(events)
        )
        return domain.UserContext(user_id="new-user", known=True, recent=recent)

    weights = EventWeights.of(settings)
    # A just-logged LIKE of item 0 lifts item 1 (EASE: they go together), before any retraining.
    liked = view.for_request(
        lightfm, context((ids[0], domain.InteractionType.LIKE, 0.0)), positions, weights
    )
    assert int(np.argmax(liked)) == 1
    # A 1-star rating is no positive: nothing to score, LightFM's scores are returned as they are.
    low = view.for_request(
        lightfm, context((ids[0], domain.InteractionType.RATING, 1.0)), positions, weights
    )
    assert low is lightfm
