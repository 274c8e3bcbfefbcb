"""Recommender training, weights, evaluation, the promotion gate and the artifact format.

Real LightFM training on small generated taste data, against SQLite (and PostgreSQL when
RECGRPC_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from recgrpc import cli
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import model_store as ms
from recgrpc.db import models as m
from recgrpc.db import training_data as td
from recgrpc.jobs.demo import generate_demo, write_demo
from recgrpc.jobs.train import train
from recgrpc.model import artifact
from recgrpc.model.evaluation import online_metrics, temporal_holdout
from recgrpc.model.features import build_interaction_data
from recgrpc.model.recommender import HybridRecommender, TrainingParams
from recgrpc.model.rerank import FRESH_SIGNIFICANT, RerankConfig, rerank
from recgrpc.model.training import NotEnoughData, training_matrices
from tests.recommender_data import load, taste_data

T0 = datetime(2019, 5, 1, tzinfo=UTC)  # years ago: decay must not depend on the wall clock


def _train(db: Database, settings: Settings, **kwargs: object) -> object:
    return train(db, settings, progress=False, **kwargs)  # type: ignore[arg-type]


# -- training quality and storage ---------------------------------------------------------------


def test_training_beats_trending_and_stores_everything(
    database: Database, settings: Settings
) -> None:
    data = taste_data()
    load(database, data)
    report = train(database, settings, progress=False, epochs=20)
    assert report.promoted
    assert report.model.ndcg > 1.5 * report.trending.ndcg
    assert report.model.precision > report.trending.precision
    assert report.model.auc > report.trending.auc
    assert report.model.coverage > report.trending.coverage
    with database.reader() as s:
        row = s.scalars(select(m.ModelArtifact)).one()
        assert (row.kind, row.status, row.version) == ("recommender", "active", report.version)
        assert row.metrics["model"]["ndcg"] == pytest.approx(report.model.ndcg)
        assert row.metrics["trending"]["ndcg"] == pytest.approx(report.trending.ndcg)
        assert row.params["loss"] == "warp"
        stored = s.execute(
            select(m.Recommendation.user_id, m.Recommendation.item_id, m.Recommendation.rank)
        ).all()
    # Every user with history gets settings.top_n unseen items, ranked 1..N.
    by_user: dict[str, list[tuple[int, str]]] = {}
    for user_id, item_id, rank in stored:
        by_user.setdefault(user_id, []).append((rank, item_id))
    assert set(by_user) == {u.user_id for u in data.users}
    seen = {(e.user_id, e.item_id) for e in data.events}
    for user_id, ranked in by_user.items():
        assert [r for r, _ in sorted(ranked)] == list(range(1, len(ranked) + 1))
        assert not any((user_id, item) in seen for _, item in ranked)
    assert report.lists_written == len(data.users)


def test_hybrid_beats_trending_on_the_demo_world(database: Database, settings: Settings) -> None:
    """The project's own demo generator, small: tastes, drift, churn, dismissals, ratings."""
    demo = generate_demo(
        seed=3, n_users=300, n_items=200, n_interactions=8000, now=datetime(2026, 6, 1, tzinfo=UTC)
    )
    write_demo(database, demo)
    report = train(database, settings, progress=False, epochs=20)
    assert report.model.ndcg >= 1.5 * report.trending.ndcg
    assert report.model.recall > report.trending.recall


def test_gate_refuses_worse_model_and_force_overrides(
    database: Database, settings: Settings
) -> None:
    load(database, taste_data())
    good = train(database, settings, progress=False, epochs=15)
    weak = TrainingParams(components=2, learning_rate=0.0005)
    worse = train(database, settings, progress=False, epochs=1, params=weak)
    assert worse.active is not None
    assert worse.active.ndcg == pytest.approx(good.model.ndcg, abs=1e-6)  # same holdout
    assert worse.model.ndcg < worse.active.ndcg
    assert not worse.promoted
    assert "kept as candidate" in worse.decision
    with database.reader() as s:
        assert ms.active_model_version(s, ms.RECOMMENDER) == good.version
        assert ms.load_model(s, worse.version).status == "candidate"  # type: ignore[union-attr]
    forced = train(database, settings, progress=False, epochs=1, params=weak, force=True)
    assert forced.promoted
    assert "--force" in forced.decision
    with database.reader() as s:
        assert ms.active_model_version(s, ms.RECOMMENDER) == forced.version
        assert ms.load_model(s, good.version).status == "retired"  # type: ignore[union-attr]


def test_too_little_data_is_refused_and_active_model_stays(
    database: Database, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = taste_data(n_users=3, n_items=10, events_per_user=2)
    load(database, tiny)
    with pytest.raises(NotEnoughData, match="not enough data"):
        train(database, settings, progress=False)
    code = cli.main(["--database-url", settings.database_url, "train"])
    assert code == 1
    assert "not enough data to train" in capsys.readouterr().err
    with database.reader() as s:
        assert s.scalars(select(m.ModelArtifact)).all() == []


def test_train_and_evaluate_commands_print_model_against_trending(
    database: Database, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    load(database, taste_data())
    url = settings.database_url
    assert cli.main(["--database-url", url, "train", "--epochs", "8", "--components", "16"]) == 0
    out = capsys.readouterr().out
    assert "NDCG@10" in out
    assert "trending" in out
    assert "promoted" in out
    with database.reader() as s:
        version = ms.active_model_version(s, ms.RECOMMENDER)
        assert version is not None
        model = ms.load_model(s, version)
        assert model is not None
        assert model.params["components"] == 16
    assert cli.main(["--database-url", url, "evaluate"]) == 0
    out = capsys.readouterr().out
    assert f"active model {version}" in out
    assert "precision@10" in out
    assert "no impressions in the window" in out  # nothing served yet


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


# -- artifact ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_arrays() -> artifact.RecommenderArrays:
    """A small model trained in memory (no database needed for the format tests)."""
    data = taste_data(n_users=40, n_items=30)
    rows = td.TrainingRows(
        items=[(it.item_id, list(it.categories), list(it.tags), T0) for it in data.items],
        users=[(u.user_id, dict(u.attributes)) for u in data.users],
        preferences=[(u.user_id, c, s) for u in data.users for c, s in u.preferences.items()],
        interactions=[
            (e.user_id, e.item_id, e.type.value, e.value, e.occurred_at) for e in data.events
        ],
        feedback=[],
    )
    built = build_interaction_data(rows, Settings())
    rec = HybridRecommender(
        TrainingParams(components=8),
        built.user_ids,
        built.item_ids,
        user_feature_names=built.user_feature_names,
        item_feature_names=built.item_feature_names,
        item_features=built.item_features,
        user_features=built.user_features,
    )
    from scipy import sparse

    interactions = sparse.coo_matrix(
        (np.ones(built.pair_user.size, dtype=np.float32), (built.pair_user, built.pair_item)),
        shape=(built.n_users, built.n_items),
    )
    rec.fit_partial(interactions, epochs=3)
    return rec.to_arrays(
        "v-test",
        user_trained_until=np.zeros(built.n_users),
        user_train_weight=np.ones(built.n_users, dtype=np.float32),
        newest_event=1.0,
    )


def test_artifact_round_trip_keeps_ids_features_and_scores(
    trained_arrays: artifact.RecommenderArrays,
) -> None:
    blob = artifact.encode(trained_arrays)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())
    loaded, arrays = HybridRecommender.from_bytes(blob)
    assert arrays.version == "v-test"
    assert arrays.params["components"] == 8
    for f in dataclasses.fields(artifact.RecommenderArrays):
        before, after = getattr(trained_arrays, f.name), getattr(arrays, f.name)
        if isinstance(before, np.ndarray):
            np.testing.assert_array_equal(before, after)
    assert loaded.item_ids == tuple(trained_arrays.item_ids.tolist())
    original = HybridRecommender.from_arrays(trained_arrays).item_representations()
    np.testing.assert_allclose(loaded.item_representations()[1], original[1])


def _tampered(arrays: artifact.RecommenderArrays, **changes: object) -> bytes:
    return artifact.encode(dataclasses.replace(arrays, **changes))  # type: ignore[arg-type]


def test_corrupt_artifacts_are_rejected_with_a_reason(
    trained_arrays: artifact.RecommenderArrays,
) -> None:
    good = artifact.encode(trained_arrays)
    emb = trained_arrays.item_feature_embeddings
    nan_emb = emb.copy()
    nan_emb[0, 0] = np.nan
    cases = {
        "not a readable npz": good[: len(good) // 2],
        "empty": b"",
        "NaN": _tampered(trained_arrays, item_feature_embeddings=nan_emb),
        "item_feature_embeddings has shape": _tampered(
            trained_arrays, item_feature_embeddings=emb[:-1]
        ),
        "user_ids are not unique": _tampered(
            trained_arrays,
            user_ids=np.array(["same"] * trained_arrays.user_ids.size),
        ),
        "per-user arrays": _tampered(trained_arrays, user_trained_until=np.zeros(2)),
        "item feature index out of range": _tampered(
            trained_arrays,
            item_features_indices=trained_arrays.item_features_indices + 10_000,
        ),
    }
    for reason, blob in cases.items():
        with pytest.raises(ValueError, match=reason):
            artifact.decode(blob)
    # An object array would need pickle to load: refused, never unpickled.
    buffer = io.BytesIO()
    with np.load(io.BytesIO(good)) as archive:
        payload = {name: archive[name] for name in archive.files}
    payload["user_ids"] = np.array([object()] * 3, dtype=object)
    np.savez(buffer, **payload)
    with pytest.raises(ValueError, match="not a readable npz"):
        artifact.decode(buffer.getvalue())


# -- online metrics ------------------------------------------------------------------------------


def test_online_metrics_per_algorithm_and_version() -> None:
    served = T0
    impressions = [
        ("r1", "u1", "HYBRID", "v1", ["a", "b", "c", "d"], served),
        ("r2", "u2", "HYBRID", "v1", ["a", "b", "c", "d"], served),
        ("r3", "u1", "POPULAR", "", ["a", "e"], served),
    ]
    feedback = [("r1", "u1", "a", True, False), ("r2", "u2", "b", False, True)]
    interactions = [
        ("u1", "a", "CLICK", served + timedelta(minutes=1)),
        ("u2", "c", "PURCHASE", served + timedelta(hours=2)),
        ("u2", "d", "VIEW", served + timedelta(days=3)),  # outside the 24 h window
        ("u2", "a", "DISLIKE", served + timedelta(hours=1)),  # not a hit
    ]
    rows = {
        (r.algorithm, r.model_version): r
        for r in online_metrics(impressions, feedback, interactions)
    }
    hybrid = rows[("HYBRID", "v1")]
    assert (hybrid.impressions, hybrid.items_shown, hybrid.clicks, hybrid.hits) == (2, 8, 1, 2)
    assert hybrid.click_through_rate == pytest.approx(1 / 8)
    assert hybrid.precision_at_curation == pytest.approx(2 / 8)
    popular = rows[("POPULAR", "")]
    assert (popular.items_shown, popular.clicks, popular.hits) == (2, 0, 1)


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
