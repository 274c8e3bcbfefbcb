"""PredictChurn through a real gRPC server, and the train-churn / score-churn commands."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import select

from recgrpc import cli
from recgrpc.config import Settings
from recgrpc.db import Database, model_store, queries
from recgrpc.db import models as m
from recgrpc.jobs.churn_scoring import ActiveChurnModel
from recgrpc.model import churn_artifact
from recgrpc.model.churn_features import FEATURE_NAMES
from recgrpc.model.churn_fitting import fit_churn_model
from recgrpc.server import RunningServer
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc
from tests import churn_history
from tests.rpc import bad_fields

END = datetime(2026, 6, 1, tzinfo=UTC)


def _at(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _request(user_id: str, as_of: datetime | None = END) -> pb.PredictChurnRequest:
    if as_of is None:
        return pb.PredictChurnRequest(user_id=user_id)
    return pb.PredictChurnRequest(user_id=user_id, as_of=_at(as_of))


def _error(call: object, request: pb.PredictChurnRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)  # type: ignore[operator]
    return info.value


def _train(url: str, capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(["--database-url", url, "train-churn", "--as-of", END.isoformat()])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ROC-AUC" in out
    assert "recency-only" in out
    return out


@pytest.fixture
def history(database: Database) -> churn_history.History:
    return churn_history.generate(database, END, users=80, days=120, seed=3)


def test_error_paths_before_and_after_training(
    server: RunningServer,
    channel: grpc.Channel,
    settings: Settings,
    history: churn_history.History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stub = pb_grpc.RecommendationServiceStub(channel)
    known = sorted(history.loyal)[0]

    error = _error(stub.PredictChurn, _request(known))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "recgrpc train-churn" in (error.details() or "")

    error = _error(stub.PredictChurn, _request("nobody"))
    assert error.code() == grpc.StatusCode.NOT_FOUND

    future = datetime.now(UTC) + timedelta(days=2)
    error = _error(stub.PredictChurn, _request(known, future))
    assert bad_fields(error) == ["as_of"]

    _train(settings.database_url, capsys)
    # The running server picks up the new model without a restart.
    deadline = time.monotonic() + 20
    code = grpc.StatusCode.UNAVAILABLE
    while code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
        try:
            stub.PredictChurn(_request(known), timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            time.sleep(0.2)
    assert code == grpc.StatusCode.OK, "the trained churn model was never loaded"

    error = _error(stub.PredictChurn, _request("nobody"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # Known user, but no activity yet at that time.
    error = _error(stub.PredictChurn, _request(known, END - timedelta(days=400)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = _error(stub.PredictChurn, _request(known, future))
    assert bad_fields(error) == ["as_of"]


def test_predictions_are_served_recorded_and_match_batch_scores(
    server: RunningServer,
    channel: grpc.Channel,
    settings: Settings,
    database: Database,
    history: churn_history.History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _train(settings.database_url, capsys)
    assert server.handlers.churn is not None
    server.refresher.refresh_once()
    stub = pb_grpc.RecommendationServiceStub(channel)
    with database.reader() as session:
        version = model_store.active_model_version(session, model_store.CHURN)

    # A user who stopped about a month before the reference time and one still active.
    gone = min(
        (u for u, day in history.churn_day.items() if day <= END - timedelta(days=25)),
        key=lambda u: abs((END - history.churn_day[u]).days - 30),
    )
    loyal = sorted(history.loyal)[0]
    before = datetime.now(UTC)
    responses = {user: stub.PredictChurn(_request(user), timeout=10) for user in (gone, loyal)}
    after = datetime.now(UTC)

    for user, response in responses.items():
        assert 0.0 <= response.churn_risk <= 1.0
        expected = (
            pb.RISK_LEVEL_HIGH
            if response.churn_risk >= settings.churn_high_threshold
            else pb.RISK_LEVEL_MEDIUM
            if response.churn_risk >= settings.churn_medium_threshold
            else pb.RISK_LEVEL_LOW
        )
        assert response.risk_level == expected, user
        assert response.model_version == version
        assert response.horizon_days == 30
        predicted_at = response.predicted_at.ToDatetime(tzinfo=UTC)
        assert before - timedelta(seconds=1) <= predicted_at <= after + timedelta(seconds=1)
        assert 1 <= len(response.factors) <= 5
        assert {f.name for f in response.factors} <= set(FEATURE_NAMES)
        # Ordered by the size of their effect.
        sizes = [abs(f.contribution) for f in response.factors]
        assert sizes == sorted(sizes, reverse=True)
    assert responses[gone].churn_risk > responses[loyal].churn_risk
    assert responses[gone].risk_level != pb.RISK_LEVEL_LOW

    with database.reader() as session:
        rows = session.scalars(
            select(m.ChurnPrediction).where(m.ChurnPrediction.user_id == gone)
        ).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.risk == pytest.approx(responses[gone].churn_risk)
    assert row.model_version == version
    assert row.as_of == END
    assert row.horizon_days == 30
    assert row.level == pb.RiskLevel.Name(responses[gone].risk_level).removeprefix("RISK_LEVEL_")
    assert [f["name"] for f in row.factors] == [f.name for f in responses[gone].factors]

    # Batch scoring writes a prediction per user, with the same risk the server gave.
    code = cli.main(
        ["--database-url", settings.database_url, "score-churn", "--as-of", END.isoformat()]
    )
    out = capsys.readouterr().out
    assert code == 0
    with database.reader() as session:
        users = len(session.scalars(select(m.Interaction.user_id).distinct()).all())
        batch = session.scalars(
            select(m.ChurnPrediction).where(
                m.ChurnPrediction.user_id == gone, m.ChurnPrediction.id != row.id
            )
        ).one()
        total = queries.count_rows(session, m.ChurnPrediction)
    assert f"scored {users} users" in out
    assert "HIGH" in out
    assert "LOW" in out
    assert total == users + 2
    assert batch.risk == pytest.approx(row.risk, abs=1e-12)


def test_commands_explain_what_is_missing(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database(database_url)
    try:
        churn_history.generate(db, END, users=5, days=20)
    finally:
        db.dispose()
    assert cli.main(["--database-url", database_url, "score-churn"]) == 1
    assert "recgrpc train-churn" in capsys.readouterr().err
    assert cli.main(["--database-url", database_url, "train-churn"]) == 1
    assert "not enough history" in capsys.readouterr().err
    zero = ["--database-url", database_url, "train-churn", "--horizon-days", "0"]
    assert cli.main(zero) == 1
    assert "horizon_days must be at least 1" in capsys.readouterr().err
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    assert cli.main(["--database-url", database_url, "train-churn", "--as-of", future]) == 2
    with pytest.raises(SystemExit):
        cli.main(["--database-url", database_url, "train-churn", "--as-of", "yesterday"])


def test_a_corrupt_stored_model_is_refused_once_and_the_loaded_one_kept(
    database: Database,
) -> None:
    rng = np.random.default_rng(0)
    values = rng.random((300, len(FEATURE_NAMES))) * 30
    labels = (values[:, 0] + rng.random(300) * 20 > 25).astype(np.int8)
    good = fit_churn_model(values, labels, horizon_days=30, version="churn-good")
    now = datetime.now(UTC)
    with database.writer() as session:
        model_store.store_active_model(
            session,
            kind=model_store.CHURN,
            version=good.version,
            artifact=churn_artifact.encode(good),
            params={},
            metrics={},
            now=now,
        )
    predictor = ActiveChurnModel(0.35, 0.65)
    assert predictor.refresh(database)
    assert predictor.version == "churn-good"
    assert not predictor.refresh(database)  # unchanged: nothing fetched

    with database.writer() as session:
        model_store.store_active_model(
            session,
            kind=model_store.CHURN,
            version="churn-bad",
            artifact=b"not an npz",
            params={},
            metrics={},
            now=now,
        )
    with pytest.raises(ValueError, match="unreadable"):
        predictor.refresh(database)
    assert not predictor.refresh(database)  # the bad version is not retried every tick
    assert predictor.version == "churn-good"
