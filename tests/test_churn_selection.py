"""train-churn's choice of model family on a later cut-off, the logistic regression's exact
factors through a real server, and the demo world's churn that recency alone cannot separate."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf import timestamp_pb2

from recgrpc import cli
from recgrpc.config import Settings
from recgrpc.db import Database, model_store
from recgrpc.jobs.churn_scoring import ActiveChurnModel
from recgrpc.jobs.churn_training import train_churn
from recgrpc.jobs.demo import generate_demo, write_demo
from recgrpc.model import churn_artifact
from recgrpc.model.churn_features import FEATURE_NAMES
from recgrpc.model.churn_linear import LOGISTIC, TREES, ChurnLinearModel
from recgrpc.model.churn_selection import fit_family, select_family
from recgrpc.server import create_server
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc
from tests import churn_history

END = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)
COLUMN = {name: j for j, name in enumerate(FEATURE_NAMES)}


def _world(
    rng: np.random.Generator, rows: int, pattern: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]:
    """Plausible feature rows and labels drawn from a known churn pattern."""
    x = np.empty((rows, len(FEATURE_NAMES)))
    x[:] = rng.lognormal(1.5, 1.0, x.shape)
    z = (np.log1p(x) - np.log1p(x).mean(0)) / np.log1p(x).std(0)
    if pattern == "linear":
        # Additive in the standardised log features, with the plausible signs.
        logit = 1.2 * z[:, COLUMN["days_since_last_event"]] - 1.0 * z[:, COLUMN["events_30d"]]
        logit -= 0.8 * z[:, COLUMN["active_days_30d"]] - 0.6 * z[:, COLUMN["dismiss_rate_30d"]]
    else:
        # Mid-tenure users churn (a bump no line can draw), the rest stay.
        logit = 4.0 - 6.0 * np.abs(z[:, COLUMN["tenure_days"]])
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    return x, labels


@pytest.mark.parametrize(("pattern", "winner"), [("linear", LOGISTIC), ("bump", TREES)])
def test_selection_keeps_the_family_that_wins_on_the_held_out_cutoff(
    pattern: str, winner: str
) -> None:
    rng = np.random.default_rng(11)
    train, held_out = _world(rng, 1500, pattern), _world(rng, 1500, pattern)
    selection = select_family(train, held_out, horizon_days=30, version="churn-test")
    scores = {c.family: c.metrics["roc_auc"] for c in selection.candidates}
    assert set(scores) == {LOGISTIC, TREES}
    assert selection.selected.family == winner
    loser = TREES if winner == LOGISTIC else LOGISTIC
    assert scores[winner] > scores[loser] + 0.005
    assert selection.recency.family == "recency"


def test_train_churn_prints_every_candidate_and_stores_the_winner(
    database: Database, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    churn_history.generate(database, END, users=120, days=150)
    code = cli.main(["--database-url", database_url, "train-churn", "--as-of", END.isoformat()])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in (LOGISTIC, TREES, "recency-only"):
        assert name in rows, out
        auc, _active, loss = (float(v) for v in rows[name].split()[1:4])
        assert 0.5 <= auc <= 1.0
        assert loss > 0
    selected = [name for name, line in rows.items() if line.endswith("<- selected")]
    assert len(selected) == 1
    assert selected[0] in (LOGISTIC, TREES)
    with database.reader() as session:
        version = model_store.active_model_version(session, model_store.CHURN)
        stored = model_store.load_model(session, version or "")
    assert stored is not None
    assert stored.params["family"] == selected[0]
    assert set(stored.metrics["candidates"]) == {LOGISTIC, TREES}
    assert stored.metrics["roc_auc"] == stored.metrics["candidates"][selected[0]]["roc_auc"]


def test_logistic_factors_through_the_server_sum_to_the_logit(
    database: Database, settings: Settings
) -> None:
    history = churn_history.generate(database, END, users=120, days=150)
    report = train_churn(database, as_of=END, horizon_days=30, families=(LOGISTIC,))
    with database.reader() as session:
        stored = model_store.load_model(session, report.model.version)
    assert stored is not None
    model = churn_artifact.decode(stored.artifact)
    assert isinstance(model, ChurnLinearModel)
    sample = np.array([[3.0, 0.5, 90, 2, 9, 30, 0.1, -0.2, 6, 4, 0.3, 0.2, 3, math.nan, 1]])
    np.testing.assert_array_equal(model.risk(sample), report.model.risk(sample))

    # Every factor listed, so their sum can be checked against the served risk.
    churn = ActiveChurnModel(0.35, 0.65, top_factors=len(FEATURE_NAMES))
    running = create_server(settings, churn=churn)
    try:
        assert running.wait_ready(30)
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(END)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.RecommendationServiceStub(channel)
            users = sorted(history.loyal)[:3] + sorted(history.churn_day)[:3]
            for user_id in users:
                got = stub.PredictChurn(pb.PredictChurnRequest(user_id=user_id, as_of=stamp))
                assert got.model_version == model.version
                logit = math.log(got.churn_risk / (1.0 - got.churn_risk))
                total = sum(f.contribution for f in got.factors)
                assert model.intercept + total == pytest.approx(logit, abs=1e-6)
                for factor in got.factors:
                    j = FEATURE_NAMES.index(factor.name)
                    z = model.standardise(
                        np.array(
                            [
                                [
                                    factor.value if k == j else math.nan
                                    for k in range(len(FEATURE_NAMES))
                                ]
                            ]
                        )
                    )
                    # coefficient x standardised value, with the feature's plausible sign
                    assert factor.contribution == pytest.approx(model.coef[j] * z[0, j])
                names = {f.name: f.contribution for f in got.factors}
                if history.churn_day.get(user_id, END) < END - 40 * DAY:
                    assert got.churn_risk > 0.5
                    # a long silence is listed as raising the risk
                    assert names.get("days_since_last_event", 1.0) > 0
    finally:
        running.stop(grace=1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_demo_churn_is_not_separable_by_recency_alone(database: Database) -> None:
    data = generate_demo(seed=1, n_users=1500, n_items=750, n_interactions=50_000, now=END)
    write_demo(database, data, now=END)
    report = train_churn(database, as_of=END, horizon_days=30)
    recency = report.baseline_metrics["roc_auc"]
    assert 0.7 < recency < 0.9
    assert report.model_metrics["roc_auc"] >= recency + 0.03


def test_a_logistic_artifact_round_trips_and_a_tampered_one_is_refused() -> None:
    rng = np.random.default_rng(5)
    x, y = _world(rng, 800, "linear")
    model = fit_family(LOGISTIC, x, y, horizon_days=30, version="churn-lr")
    loaded = churn_artifact.decode(churn_artifact.encode(model))
    assert isinstance(loaded, ChurnLinearModel)
    np.testing.assert_array_equal(loaded.risk(x[:50]), model.risk(x[:50]))
    with np.load(io.BytesIO(churn_artifact.encode(model)), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    assert str(arrays["family"]) == LOGISTIC
    silence = COLUMN["days_since_last_event"]
    flipped = arrays["coef"].copy()
    flipped[silence] = -abs(flipped[silence]) - 1.0  # a longer silence would lower the risk
    for changes, message in (
        ({"coef": flipped}, "monotone"),
        ({"scale": np.zeros_like(arrays["scale"])}, "non-positive"),
        ({"family": np.array("forest")}, "unknown model family"),
        ({"format": np.array([99])}, "newer"),
    ):
        data = io.BytesIO()
        np.savez(data, **{**arrays, **changes})
        with pytest.raises(ValueError, match=message):
            churn_artifact.decode(data.getvalue())


def test_trees_stored_before_a_feature_was_added_keep_serving() -> None:
    """A format-1 artifact over the older feature list loads, renumbered, with the same risks."""
    rng = np.random.default_rng(8)
    x, y = _world(rng, 800, "bump")
    new = COLUMN["silence_vs_usual_gap"]
    x[:, new] = 0.0  # constant: the trees never split on it, as if it did not exist
    model = fit_family(TREES, x, y, horizon_days=30, version="churn-old")
    with np.load(io.BytesIO(churn_artifact.encode(model)), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in ("format", "family")}
    old_names = [n for n in FEATURE_NAMES if n != "silence_vs_usual_gap"]
    inner = ~arrays["node_is_leaf"]
    assert not np.any(arrays["node_feature"][inner] == new)
    arrays["feature_names"] = np.array(old_names, dtype=np.str_)
    arrays["node_feature"] = np.where(arrays["node_feature"] > new, arrays["node_feature"] - 1,
                                      arrays["node_feature"])  # fmt: skip
    arrays["reference"] = np.delete(arrays["reference"], new)
    data = io.BytesIO()
    np.savez(data, **arrays)
    loaded = churn_artifact.decode(data.getvalue())
    np.testing.assert_array_equal(loaded.risk(x[:100]), model.risk(x[:100]))
    _risks, contributions = loaded.explain(x[:20])
    assert not np.any(contributions[:, new])
