"""Recommender training, evaluation and the promotion gate.

Real LightFM training on small generated taste data, against SQLite (and PostgreSQL when
RECGRPC_TEST_DATABASE_URL is set)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from recgrpc import cli
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db import model_store as ms
from recgrpc.db import models as m
from recgrpc.jobs.demo import generate_demo, write_demo
from recgrpc.jobs.train import train
from recgrpc.model.evaluation import online_metrics
from recgrpc.model.recommender import TrainingParams
from recgrpc.model.training import NotEnoughData
from tests.recommender_data import T0, load, taste_data


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
