"""Training the churn model on generated histories with planted churners; its artifact and
its explanations."""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recgrpc.db import Database, model_store
from recgrpc.domain import RiskLevel
from recgrpc.jobs.churn_scoring import churn_features
from recgrpc.jobs.churn_training import train_churn
from recgrpc.model import churn_artifact
from recgrpc.model.churn_features import FEATURE_NAMES
from recgrpc.model.churn_linear import TREES
from recgrpc.model.churn_predictor import risk_level
from recgrpc.model.churn_trees import ChurnModel
from tests import churn_history
from tests.conftest import BACKENDS, module_database_url

END = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module", params=BACKENDS)
def trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Database, churn_history.History, ChurnModel, dict]]:
    """One generated history and trained model per backend, shared by this module's tests."""
    db = Database(module_database_url(request, tmp_path_factory, "churn"))
    history = churn_history.generate(db, END, users=120, days=150)
    # The trees' own behaviour; choosing between families is tests/test_churn_selection.py.
    report = train_churn(db, as_of=END, horizon_days=30, families=(TREES,))
    metrics = {"model": report.model_metrics, "baseline": report.baseline_metrics}
    assert isinstance(report.model, ChurnModel)
    yield db, history, report.model, metrics
    db.dispose()


def test_model_beats_recency_on_the_later_cutoff(trained) -> None:
    _db, _history, _model, metrics = trained
    assert metrics["model"]["roc_auc"] >= 0.85
    assert metrics["model"]["roc_auc"] > metrics["baseline"]["roc_auc"]
    assert metrics["model"]["log_loss"] < metrics["baseline"]["log_loss"]


def test_planted_churners_rank_above_loyal_users(trained) -> None:
    db, history, model, _metrics = trained
    # Users fading now: their churn day is within three weeks either side of the reference.
    as_of = END - 25 * DAY
    fading = {u for u, day in history.churn_day.items() if abs((day - as_of).days) <= 21}
    with db.reader() as session:
        table = churn_features(session, as_of)
    risk = dict(zip(table.user_ids, model.risk(table.values).tolist(), strict=True))
    scored = [u for u in table.user_ids if u in fading or u in history.loyal]
    labels = [1 if u in fading else 0 for u in scored]
    assert sum(labels) >= 5
    assert roc_auc_score(labels, [risk[u] for u in scored]) >= 0.9


def test_stored_model_is_active_and_loads_without_pickle(trained) -> None:
    db, _history, model, _metrics = trained
    with db.reader() as session:
        version = model_store.active_model_version(session, model_store.CHURN)
        stored = model_store.load_model(session, version or "")
    assert version == model.version
    assert stored is not None
    assert stored.metrics["roc_auc"] == pytest.approx(_metrics["model"]["roc_auc"])
    assert stored.metrics["baseline"]["roc_auc"] is not None
    assert stored.params["horizon_days"] == 30
    with zipfile.ZipFile(io.BytesIO(stored.artifact)) as archive:
        for name in archive.namelist():
            # .npy headers of plain arrays; an object array would need pickle to load
            header = archive.read(name)[:128].decode("latin-1")
            assert "'descr': '|O'" not in header
    loaded = churn_artifact.decode(stored.artifact)
    sample = np.array([[3.0, 0.5, 90, 2, 9, 30, 0.1, -0.2, 6, 4, 0.3, 0.2, 3, math.nan, 1]])
    np.testing.assert_array_equal(loaded.risk(sample), model.risk(sample))
    assert isinstance(loaded, ChurnModel)
    assert stored.params["family"] == "trees"
    assert stored.params["trees"] == len(loaded.tree_roots)

    # A retrain retires the previous model.
    newer = train_churn(db, as_of=END, horizon_days=30).model
    with db.reader() as session:
        assert model_store.active_model_version(session, model_store.CHURN) == newer.version
        assert model_store.load_model(session, model.version) is not None


def test_tampered_artifact_is_refused(trained) -> None:
    _db, _history, model, _metrics = trained
    with np.load(io.BytesIO(churn_artifact.encode(model)), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    data = io.BytesIO()
    np.savez(data, **{**arrays, "node_value": np.array([object()] * 3, dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        churn_artifact.decode(data.getvalue())
    data = io.BytesIO()
    np.savez(data, **{k: v for k, v in arrays.items() if k != "reference"})
    with pytest.raises(ValueError, match="unreadable"):
        churn_artifact.decode(data.getvalue())
    with pytest.raises(ValueError, match="unreadable"):
        churn_artifact.decode(b"not an archive")
    # A child pointing back at its parent would make the tree walk loop.
    cyclic = model.node_left.copy()
    inner = int(np.flatnonzero(~model.node_is_leaf)[0])
    cyclic[inner] = inner
    for changes, message in (
        ({"node_left": cyclic}, "corrupt"),
        ({"node_value": model.node_value * np.nan}, "NaN"),
        ({"calib_slope": -1.0}, "non-positive"),
        ({"feature_names": ("a", "b")}, "other features"),
    ):
        broken = ChurnModel(**{**_fields(model), **changes})
        with pytest.raises(ValueError, match=message):
            churn_artifact.decode(churn_artifact.encode(broken))


def test_factors_are_honest(trained) -> None:
    """A factor listed as raising risk does raise it: at its typical value, the risk falls."""
    db, _history, model, _metrics = trained
    with db.reader() as session:
        table = churn_features(session, END)
    risks, contributions = model.explain(table.values[:40])
    checked = 0
    for i, user_id in enumerate(table.user_ids[:40]):
        raw = table.values[i]
        risk = float(model.risk(raw)[0])
        assert risks[i] == pytest.approx(risk, abs=1e-12)
        factors = model.factors(raw, contributions[i], top=len(FEATURE_NAMES))
        assert factors, user_id
        for factor in factors:
            j = FEATURE_NAMES.index(factor.name)
            assert factor.value == pytest.approx(raw[j])
            typical = raw.copy()
            typical[j] = model.reference[j]
            without = float(model.risk(typical)[0])
            assert factor.contribution == pytest.approx(risk - without, abs=1e-12)
            assert factor.contribution != 0
            # the sign says which way the value moves this user's risk
            assert (without < risk) == (factor.contribution > 0)
            checked += 1
    assert checked > 60


def test_a_long_silence_is_listed_as_raising_risk(trained) -> None:
    db, history, model, _metrics = trained
    with db.reader() as session:
        table = churn_features(session, END)
    gone = [u for u, day in history.churn_day.items() if day < END - 20 * DAY]
    assert gone
    risks, contributions = model.explain(np.array([table.row(u) for u in gone]))
    for i, user_id in enumerate(gone):
        assert risk_level(risks[i], 0.35, 0.65) is RiskLevel.HIGH, user_id
        factors = model.factors(table.row(user_id), contributions[i])
        names = {f.name: f for f in factors}
        assert names["days_since_last_event"].contribution > 0
        assert names["days_since_last_event"].value >= 20


def _fields(model: ChurnModel) -> dict:
    return {name: getattr(model, name) for name in ChurnModel.__dataclass_fields__}
