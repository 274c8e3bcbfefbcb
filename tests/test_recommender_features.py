"""The recommender's training inputs without a database: event weights and decay, feature rows,
explicit negatives per loss, and the diversity/freshness re-ranking of a served list."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from recgrpc.config import Settings
from recgrpc.db import training_data as td
from recgrpc.model.evaluation import temporal_holdout
from recgrpc.model.features import build_interaction_data
from recgrpc.model.rerank import FRESH_SIGNIFICANT, RerankConfig, rerank
from recgrpc.model.training import training_matrices
from tests.recommender_data import T0

# -- features and weights ------------------------------------------------------------------------


def _rows(
    interactions: list[tuple[str, str, str, float, datetime]],
    feedback: list[tuple[str, str, bool, bool, float | None, datetime]] | None = None,
) -> td.TrainingRows:
    items = [(f"i{n}", ["c"], ["t"], T0) for n in range(6)]
    users = [("u1", {}), ("u2", {})]
    return td.TrainingRows(items, users, [], interactions, feedback or [])


def _pairs(rows: td.TrainingRows, settings: Settings) -> dict[tuple[str, str], float]:
    data = build_interaction_data(rows, settings)
    return {
        (data.user_ids[u], data.item_ids[i]): float(w)
        for u, i, w in zip(data.pair_user, data.pair_item, data.pair_weight, strict=True)
    }


def test_weights_by_type_rating_and_decay_from_newest_event() -> None:
    settings = Settings(decay_half_life_days=10.0)
    rows = _rows(
        [
            ("u1", "i0", "PURCHASE", 0.0, T0),
            ("u1", "i1", "VIEW", 0.0, T0),
            ("u1", "i2", "RATING", 5.0, T0),
            ("u1", "i3", "RATING", 1.0, T0),  # a 1-star rating is not a like
            ("u2", "i0", "VIEW", 0.0, T0 - timedelta(days=10)),  # one half-life older
            ("u2", "i1", "CLICK", 0.0, T0),
            ("u2", "i1", "DISLIKE", 0.0, T0),  # cancels the click
        ]
    )
    pairs = _pairs(rows, settings)
    assert pairs[("u1", "i0")] == pytest.approx(6.0)  # newest event: no decay, years ago or not
    assert pairs[("u1", "i1")] == pytest.approx(1.0)
    assert pairs[("u1", "i2")] == pytest.approx(4.0)  # 5 stars = a like
    assert ("u1", "i3") not in pairs
    assert pairs[("u2", "i0")] == pytest.approx(0.5)
    assert ("u2", "i1") not in pairs
    data = build_interaction_data(rows, settings)
    negatives = {
        (data.user_ids[u], data.item_ids[i])
        for u, i in zip(data.negative_user, data.negative_item, strict=True)
    }
    assert negatives == {("u1", "i3"), ("u2", "i1")}


def test_decay_counts_back_from_each_users_own_newest_event() -> None:
    # u2 stopped three years before u1's newest event: their history still counts in full.
    settings = Settings(decay_half_life_days=10.0)
    old = T0 - timedelta(days=3 * 365)
    rows = _rows(
        [
            ("u1", "i0", "LIKE", 0.0, T0),
            ("u2", "i1", "LIKE", 0.0, old),
            ("u2", "i2", "LIKE", 0.0, old - timedelta(days=10)),  # one half-life before u2's last
        ]
    )
    pairs = _pairs(rows, settings)
    assert pairs[("u1", "i0")] == pytest.approx(4.0)
    assert pairs[("u2", "i1")] == pytest.approx(4.0)
    assert pairs[("u2", "i2")] == pytest.approx(2.0)


def test_dismissed_pairs_are_never_positive_and_feedback_clicks_count() -> None:
    settings = Settings()
    rows = _rows(
        [("u1", "i0", "PURCHASE", 0.0, T0), ("u1", "i1", "VIEW", 0.0, T0)],
        feedback=[
            ("u1", "i0", False, True, None, T0),  # bought, then dismissed: never a positive
            ("u1", "i4", True, False, None, T0),  # clicked on a recommendation
            ("u2", "i5", False, False, 1.0, T0),  # rated 1 through feedback
        ],
    )
    pairs = _pairs(rows, settings)
    assert ("u1", "i0") not in pairs
    assert pairs[("u1", "i4")] == pytest.approx(settings.interaction_weights["CLICK"])
    assert ("u2", "i5") not in pairs


def test_feature_rows_hold_identity_preferences_attributes_categories_and_tags() -> None:
    rows = td.TrainingRows(
        items=[("a", ["x", "y"], ["t1"], T0), ("b", ["x"], ["t1", "solo"], T0)],
        users=[("u1", {"tier": "gold"}), ("u2", {"tier": "gold", "name": "unique"})],
        preferences=[("u1", "x", 3.0), ("u1", "y", 1.0)],
        interactions=[("u1", "a", "CLICK", 0.0, T0)],
        feedback=[],
    )
    data = build_interaction_data(rows, Settings())
    users = data.user_features.toarray()
    names = data.user_feature_names
    u1 = dict(zip(names, users[data.user_ids.index("u1")], strict=True))
    assert u1["user:u1"] > u1["preference:x"] > u1["preference:y"] > 0
    assert u1["attribute:tier=gold"] > 0
    assert "attribute:name=unique" not in names  # shared by one user only: no feature
    assert users.sum(axis=1) == pytest.approx([1.0, 1.0])
    items = dict(zip(data.item_feature_names, data.item_features.toarray()[0], strict=True))
    assert items["item:a"] > items["category:x"] == items["category:y"] > 0
    # Categories together weigh twice what tags do.
    assert items["category:x"] + items["category:y"] == pytest.approx(2 * items["tag:t1"])
    assert "tag:solo" not in data.item_feature_names


# -- re-ranking ----------------------------------------------------------------------------------


def _rerank(diversity: float, boost: float, fresh: list[float]) -> list[tuple[int, bool]]:
    scores = np.array([1.0, 0.99, 0.98, 0.5, 0.49, 0.4, 0.1], dtype=np.float32)
    categories = [("a",), ("a",), ("a",), ("b",), ("b",), ("c",), ("a", "d")]
    freshness = np.array(fresh, dtype=np.float32)
    result = rerank(
        scores,
        3,
        categories=categories,
        fresh=freshness,
        fresh_items=np.flatnonzero(freshness >= FRESH_SIGNIFICANT),
        config=RerankConfig(diversity=diversity, freshness_boost=boost),
    )
    return list(zip(result.indices.tolist(), result.fresh.tolist(), strict=True))


def test_diversity_penalises_repeated_categories() -> None:
    stale = [0.0] * 7
    assert [i for i, _ in _rerank(0.0, 0.0, stale)] == [0, 1, 2]
    # A strong penalty makes the runner-up category win the second slot.
    assert [i for i, _ in _rerank(0.9, 0.0, stale)] == [0, 3, 5]


def test_freshness_boost_lifts_new_items_and_says_so() -> None:
    fresh = [0.0] * 6 + [1.0]  # the last, lowest-scored item is brand new
    assert 6 not in [i for i, _ in _rerank(0.0, 0.0, fresh)]
    picked = dict(_rerank(0.0, 2.0, fresh))
    assert picked[6] is True  # in the list because of the boost: reason "fresh"
    assert picked[0] is False


def test_negatives_are_explicit_for_logistic_loss_and_absent_for_ranking_losses() -> None:
    rows = _rows(
        [
            ("u1", "i0", "PURCHASE", 0.0, T0),
            ("u1", "i1", "CLICK", 0.0, T0),
            ("u1", "i2", "VIEW", 0.0, T0),
            ("u1", "i3", "DISLIKE", 0.0, T0),
        ],
        feedback=[("u2", "i4", False, True, None, T0)],
    )
    data = build_interaction_data(rows, Settings())
    holdout = temporal_holdout(data)
    warp, _ = training_matrices(data, holdout, 1.0, "warp")
    assert set(warp.data.tolist()) == {1.0}
    logistic, weights = training_matrices(data, holdout, 1.0, "logistic")
    negatives = {
        (data.user_ids[u], data.item_ids[i])
        for u, i, v in zip(logistic.row, logistic.col, logistic.data, strict=True)
        if v < 0
    }
    assert negatives == {("u1", "i3"), ("u2", "i4")}
    assert (weights.row == logistic.row).all()
    assert (weights.col == logistic.col).all()
