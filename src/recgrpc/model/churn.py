"""Churn prediction (DESIGN.md §5): features as of a time, labels, training, serving.

A user *churns* at ``as_of`` when they have no interaction in ``(as_of, as_of + horizon_days]``.
Only users with an interaction at or before ``as_of`` are scored or labelled.

Features come from :func:`churn_features`, the one function used by training (every user at a
cut-off) and by serving (one user), so the two cannot drift apart.

The model is gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier) with Platt
scaling fitted on out-of-fold scores, exported to plain arrays that this module walks itself. The
contribution of a factor is how much the user's risk would fall (or rise) if that factor alone
were at its typical value, so a factor reported as raising the risk does raise it.
"""

from __future__ import annotations

import io
import math
import secrets
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sqlalchemy.orm import Session
from threadpoolctl import threadpool_limits

from recgrpc import domain
from recgrpc.db import Database, churn_data, model_store
from recgrpc.errors import NotFound, Unavailable

FloatArray = npt.NDArray[np.float64]

NO_CHURN_MODEL = "no churn model has been trained yet; run `recgrpc train-churn`"

FEATURE_NAMES: tuple[str, ...] = (
    "days_since_last_event",
    "tenure_days",
    "events_7d",
    "events_30d",
    "events_90d",
    "trend_7d_vs_prev_3w",
    "trend_30d_vs_prev_60d",
    "active_days_30d",
    "impressions_30d",
    "click_through_rate_30d",
    "dismiss_rate_30d",
    "feedback_30d",
    "mean_rating_90d",
    "preferences",
)
"""Feature order in matrices and artifacts."""

# How each feature may move the risk, other features equal (+1 raises it, -1 lowers it, 0 free).
# The trees are held to these directions: they regularise small histories and keep the
# explanations plausible (a longer silence never lowers the risk).
MONOTONE_EFFECT: dict[str, int] = {
    "days_since_last_event": 1,
    "tenure_days": 0,
    "events_7d": -1,
    "events_30d": -1,
    "events_90d": 0,
    "trend_7d_vs_prev_3w": -1,
    "trend_30d_vs_prev_60d": -1,
    "active_days_30d": -1,
    "impressions_30d": 0,
    "click_through_rate_30d": -1,
    "dismiss_rate_30d": 1,
    "feedback_30d": 0,
    "mean_rating_90d": -1,
    "preferences": 0,
}

DAY_SECONDS = 86_400.0


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- features -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeatureTable:
    """Feature rows as of one time: ``values[i]`` belongs to ``user_ids[i]``.

    Undefined rates (no exposure, no ratings) are NaN: the trees route missing values on a
    branch of their own, learned in training.
    """

    as_of: datetime
    user_ids: tuple[str, ...]
    values: FloatArray

    def row(self, user_id: str) -> FloatArray:
        row: FloatArray = self.values[self.user_ids.index(user_id)]
        return row


def features_from_aggregates(agg: churn_data.UserAggregates, as_of: datetime) -> list[float]:
    """One user's feature vector (order of ``FEATURE_NAMES``) from their aggregates."""
    act = agg.activity
    fb = agg.feedback
    prev_3w_weekly = (act.events_28d - act.events_7d) / 3.0
    prev_60d_monthly = (act.events_90d - act.events_30d) / 2.0
    exposure = max(agg.impressions_30d, fb.feedback_30d)
    nan = math.nan
    return [
        max((as_of - act.last_event_at).total_seconds(), 0.0) / DAY_SECONDS,
        max((as_of - act.first_event_at).total_seconds(), 0.0) / DAY_SECONDS,
        float(act.events_7d),
        float(act.events_30d),
        float(act.events_90d),
        math.log((act.events_7d + 1.0) / (prev_3w_weekly + 1.0)),
        math.log((act.events_30d + 1.0) / (prev_60d_monthly + 1.0)),
        float(act.active_days_30d),
        float(agg.impressions_30d),
        # Impressions are served lists; without them (imported feedback) each feedback row
        # stands for one item shown.
        fb.clicks_30d / exposure if exposure else nan,
        fb.dismissals_30d / fb.feedback_30d if fb.feedback_30d else nan,
        float(fb.feedback_30d),
        fb.rating_sum_90d / fb.ratings_90d if fb.ratings_90d else nan,
        # Preferences keep no history: past cut-offs see today's count.
        float(agg.preferences),
    ]


def churn_features(
    session: Session, as_of: datetime, user_ids: Sequence[str] | None = None
) -> FeatureTable:
    """Features as of ``as_of`` for ``user_ids`` (None: every user with history by then).

    The single source of features for training and serving. Users with no interaction at or
    before ``as_of`` are absent from the table.
    """
    aggregates = churn_data.user_aggregates(session, as_of, user_ids)
    ids = tuple(sorted(aggregates))
    values = np.array(
        [features_from_aggregates(aggregates[uid], as_of) for uid in ids], dtype=np.float64
    ).reshape(len(ids), len(FEATURE_NAMES))
    return FeatureTable(as_of=as_of, user_ids=ids, values=values)


def churn_labels(
    session: Session, user_ids: Sequence[str], as_of: datetime, horizon_days: int
) -> npt.NDArray[np.int8]:
    """1 where the user has no interaction in ``(as_of, as_of + horizon_days]``, else 0."""
    returned = churn_data.active_user_ids(session, as_of, as_of + timedelta(days=horizon_days))
    return np.array([0 if uid in returned else 1 for uid in user_ids], dtype=np.int8)


# -- the model ----------------------------------------------------------------------------

BOOSTING_ROUNDS = 150
MAX_LEAF_NODES = 7
MIN_SAMPLES_LEAF = 20
MAX_TREE_DEPTH = 64
EXPLAIN_BATCH_ROWS = 30_000
"""Rows (users x their variants) scored at once when explaining a batch; bounds memory."""


@dataclass(frozen=True, slots=True)
class ChurnModel:
    """A fitted churn model, as plain arrays.

    score(x) = baseline + sum over trees of the leaf ``x`` reaches, where a node sends ``x``
    left when ``x[feature] <= threshold`` (or, for a missing value, when ``missing_left``);
    risk = sigmoid(calib_slope * score + calib_intercept). Node arrays hold every tree back to
    back; ``tree_roots`` are the roots and children always come after their parent.
    """

    version: str
    feature_names: tuple[str, ...]
    reference: FloatArray
    """The typical training value of each feature (median; NaN when never defined)."""
    baseline: float
    tree_roots: npt.NDArray[np.int64]
    node_feature: npt.NDArray[np.int64]
    node_threshold: FloatArray
    node_missing_left: npt.NDArray[np.bool_]
    node_left: npt.NDArray[np.int64]
    node_right: npt.NDArray[np.int64]
    node_is_leaf: npt.NDArray[np.bool_]
    node_value: FloatArray
    depth: int
    calib_slope: float
    calib_intercept: float
    horizon_days: int

    def score(self, raw: FloatArray) -> FloatArray:
        """Uncalibrated log-odds per row of raw features (all trees walked at once)."""
        x = np.atleast_2d(raw)
        rows = np.arange(x.shape[0])[:, None]
        node = np.broadcast_to(self.tree_roots, (x.shape[0], len(self.tree_roots))).copy()
        for _ in range(self.depth):
            leaf = self.node_is_leaf[node]
            if leaf.all():
                break
            value = x[rows, self.node_feature[node]]
            go_left = np.where(
                np.isnan(value), self.node_missing_left[node], value <= self.node_threshold[node]
            )
            node = np.where(
                leaf, node, np.where(go_left, self.node_left[node], self.node_right[node])
            )
        score: FloatArray = self.baseline + self.node_value[node].sum(axis=1)
        return score

    def risk(self, raw: FloatArray) -> FloatArray:
        """Calibrated churn probability per row of raw features."""
        return _sigmoid(self.calib_slope * self.score(raw) + self.calib_intercept)

    def explain(self, raw: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Risk per row, and each feature's contribution to it (rows x features).

        A feature's contribution is the user's risk minus the risk the same user would have
        with that one feature at its typical (training median) value: positive means this
        value raises the user's risk, negative that it lowers it. Each user and their
        variants are scored in one batch.
        """
        x = np.atleast_2d(raw)
        users, features = x.shape
        risks = np.empty(users)
        contributions = np.empty((users, features))
        step = max(1, EXPLAIN_BATCH_ROWS // (features + 1))
        columns = np.arange(features)
        for start in range(0, users, step):
            chunk = x[start : start + step]
            variants = np.repeat(chunk, features + 1, axis=0).reshape(
                len(chunk), features + 1, features
            )
            variants[:, 1 + columns, columns] = self.reference
            scored = self.risk(variants.reshape(-1, features)).reshape(len(chunk), features + 1)
            risks[start : start + len(chunk)] = scored[:, 0]
            contributions[start : start + len(chunk)] = scored[:, :1] - scored[:, 1:]
        return risks, contributions

    def factors(
        self, raw_row: FloatArray, contributions: FloatArray, top: int = 5
    ) -> list[domain.ChurnFactor]:
        """The ``top`` factors by the size of their contribution (see :meth:`explain`).

        Undefined values (a rate without exposure) still count in the risk but are not
        listed, having no value to show.
        """
        order = np.argsort(-np.abs(contributions), kind="stable")
        listed = [
            domain.ChurnFactor(
                name=self.feature_names[j],
                value=float(raw_row[j]),
                contribution=float(contributions[j]),
            )
            for j in order
            if contributions[j] != 0.0 and not math.isnan(raw_row[j])
        ]
        return listed[:top]

    def to_bytes(self) -> bytes:
        """Serialise as an ``.npz`` of numeric and fixed-width string arrays.

        Nothing here is pickled: ``np.savez`` writes plain typed arrays, and :meth:`from_bytes`
        loads with ``allow_pickle=False``, which refuses object arrays, then checks shapes,
        index ranges and values. Loading a stored model can therefore only yield numbers and
        strings, never run code, whoever wrote the bytes; the trees are walked by our own
        numpy code, not by an unpickled estimator.
        """
        buffer = io.BytesIO()
        np.savez(
            buffer,
            version=np.array(self.version),
            feature_names=np.array(self.feature_names, dtype=np.str_),
            reference=self.reference,
            baseline=np.array([self.baseline]),
            tree_roots=self.tree_roots,
            node_feature=self.node_feature,
            node_threshold=self.node_threshold,
            node_missing_left=self.node_missing_left,
            node_left=self.node_left,
            node_right=self.node_right,
            node_is_leaf=self.node_is_leaf,
            node_value=self.node_value,
            depth=np.array([self.depth], dtype=np.int64),
            calibration=np.array([self.calib_slope, self.calib_intercept]),
            horizon_days=np.array([self.horizon_days], dtype=np.int64),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ChurnModel:
        """Load and validate an artifact written by :meth:`to_bytes` (no pickle allowed)."""
        try:
            model = cls._read(data)
        except (ValueError, KeyError, IndexError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"churn model artifact is unreadable: {exc}") from exc
        model.validate()
        return model

    @classmethod
    def _read(cls, data: bytes) -> ChurnModel:
        # np.load raises ValueError on object arrays: they would need pickle.
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:

            def ints(key: str) -> npt.NDArray[np.int64]:
                return np.asarray(npz[key], dtype=np.int64)

            def floats(key: str) -> FloatArray:
                return np.asarray(npz[key], dtype=np.float64)

            def flags(key: str) -> npt.NDArray[np.bool_]:
                return np.asarray(npz[key], dtype=np.bool_)

            return cls(
                version=str(npz["version"]),
                feature_names=tuple(str(n) for n in npz["feature_names"]),
                reference=floats("reference"),
                baseline=float(npz["baseline"][0]),
                tree_roots=ints("tree_roots"),
                node_feature=ints("node_feature"),
                node_threshold=floats("node_threshold"),
                node_missing_left=flags("node_missing_left"),
                node_left=ints("node_left"),
                node_right=ints("node_right"),
                node_is_leaf=flags("node_is_leaf"),
                node_value=floats("node_value"),
                depth=int(npz["depth"][0]),
                calib_slope=float(npz["calibration"][0]),
                calib_intercept=float(npz["calibration"][1]),
                horizon_days=int(npz["horizon_days"][0]),
            )

    def validate(self) -> None:
        """Refuse an artifact that could not be walked safely or would score garbage."""
        if self.feature_names != FEATURE_NAMES:
            raise ValueError(
                "churn model was trained on other features; retrain with `recgrpc train-churn`"
            )
        if self.reference.shape != (len(FEATURE_NAMES),):
            raise ValueError("churn model reference values have the wrong shape")
        nodes = self.node_value.shape
        for name in ("node_feature", "node_threshold", "node_missing_left", "node_left",
                     "node_right", "node_is_leaf"):  # fmt: skip
            if getattr(self, name).shape != nodes:
                raise ValueError(f"churn model array {name} has the wrong shape")
        if len(self.tree_roots) == 0 or self.tree_roots.ndim != 1:
            raise ValueError("churn model has no trees")
        inner = ~self.node_is_leaf
        index = np.arange(nodes[0])
        if (
            np.any((self.tree_roots < 0) | (self.tree_roots >= nodes[0]))
            or np.any(self.node_left[inner] <= index[inner])
            or np.any(self.node_right[inner] <= index[inner])
            or np.any(self.node_left[inner] >= nodes[0])
            or np.any(self.node_right[inner] >= nodes[0])
            or np.any(self.node_feature[inner] < 0)
            or np.any(self.node_feature[inner] >= len(FEATURE_NAMES))
        ):
            raise ValueError("churn model trees are corrupt (node indices out of range)")
        if not 1 <= self.depth <= MAX_TREE_DEPTH:
            raise ValueError("churn model tree depth is out of range")
        numbers = np.array([self.baseline, self.calib_slope, self.calib_intercept])
        if (
            not np.all(np.isfinite(self.node_value))
            or np.any(np.isnan(self.node_threshold[inner]))
            or not np.all(np.isfinite(numbers))
        ):
            raise ValueError("churn model holds NaN or infinite values")
        if self.calib_slope <= 0 or self.horizon_days < 1:
            raise ValueError("churn model has a non-positive calibration slope or horizon")


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))
    return out


def new_version(now: datetime) -> str:
    return f"churn-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _classifier(seed: int) -> HistGradientBoostingClassifier:
    # A fixed number of small, slow-learning, direction-constrained trees: no validation
    # split to lose on small histories, and the same model for the same data.
    return HistGradientBoostingClassifier(
        max_iter=BOOSTING_ROUNDS,
        learning_rate=0.05,
        max_leaf_nodes=MAX_LEAF_NODES,
        min_samples_leaf=MIN_SAMPLES_LEAF,
        l2_regularization=1.0,
        monotonic_cst=[MONOTONE_EFFECT[name] for name in FEATURE_NAMES],
        early_stopping=False,
        random_state=seed,
    )


def fit_churn_model(
    values: FloatArray,
    labels: npt.NDArray[np.int8],
    *,
    horizon_days: int,
    version: str,
    seed: int = 0,
) -> ChurnModel:
    """Fit gradient-boosted trees and their Platt scaling on labelled snapshots.

    The trees are copied into plain arrays and checked to reproduce the fitted estimator's
    scores exactly, so serving never depends on (or unpickles) a scikit-learn object.
    """
    counts = np.bincount(labels, minlength=2)
    if counts.min() == 0:
        raise ValueError("training snapshots hold only one class; need churned and retained users")
    # A feature never defined in training (no ratings at all) cannot be binned; as a constant
    # it never splits, so its later values are ignored until the next training.
    never_defined = np.isnan(values).all(axis=0)
    values = np.where(never_defined, 0.0, values)
    # One thread: OpenMP workers spinning on cores shared with the server cost far more than
    # they save on snapshots this size.
    with threadpool_limits(limits=1):
        return _fit(values, labels, horizon_days=horizon_days, version=version, seed=seed)


def _fit(
    values: FloatArray,
    labels: npt.NDArray[np.int8],
    *,
    horizon_days: int,
    version: str,
    seed: int,
) -> ChurnModel:
    counts = np.bincount(labels, minlength=2)
    classifier = _classifier(seed)
    folds = min(3, int(counts.min()))
    if folds >= 2:
        # Platt scaling on out-of-fold scores corrects the trees' over-confidence on the data
        # they were fitted to.
        oof = cross_val_predict(
            classifier,
            values,
            labels,
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            method="decision_function",
        )
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(oof.reshape(-1, 1), labels)
        slope, offset = float(platt.coef_[0][0]), float(platt.intercept_[0])
    else:
        slope, offset = 1.0, 0.0
    if slope <= 0:  # no signal out of fold; keep the trees' own probabilities
        slope, offset = 1.0, 0.0
    classifier.fit(values, labels)
    model = _export(
        classifier,
        values,
        horizon_days=horizon_days,
        version=version,
        slope=slope,
        offset=offset,
    )
    sample = values[: min(len(values), 5000)]
    if not np.allclose(model.score(sample), classifier.decision_function(sample), atol=1e-9):
        raise RuntimeError("the exported churn trees do not reproduce the fitted model")
    return model


def _export(
    classifier: HistGradientBoostingClassifier,
    values: FloatArray,
    *,
    horizon_days: int,
    version: str,
    slope: float,
    offset: float,
) -> ChurnModel:
    # scikit-learn keeps each boosting round's tree as a TreePredictor with a ``nodes`` record
    # array; the pinned version's layout is checked by fit_churn_model's reproduction test.
    trees = [round_trees[0].nodes for round_trees in classifier._predictors]
    sizes = np.array([len(t) for t in trees], dtype=np.int64)
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    nodes = np.concatenate(trees)
    shift = np.repeat(roots, sizes)
    is_leaf = nodes["is_leaf"].astype(np.bool_)
    left = np.where(is_leaf, 0, nodes["left"].astype(np.int64) + shift)
    right = np.where(is_leaf, 0, nodes["right"].astype(np.int64) + shift)
    present = ~np.isnan(values)
    reference = np.array(
        [
            float(np.median(values[present[:, j], j])) if present[:, j].any() else math.nan
            for j in range(values.shape[1])
        ]
    )
    model = ChurnModel(
        version=version,
        feature_names=FEATURE_NAMES,
        reference=reference,
        baseline=float(np.ravel(classifier._baseline_prediction)[0]),
        tree_roots=roots,
        node_feature=np.where(is_leaf, 0, nodes["feature_idx"]).astype(np.int64),
        node_threshold=nodes["num_threshold"].astype(np.float64),
        node_missing_left=nodes["missing_go_to_left"].astype(np.bool_),
        node_left=left,
        node_right=right,
        node_is_leaf=is_leaf,
        node_value=np.where(is_leaf, nodes["value"], 0.0).astype(np.float64),
        depth=max(1, int(nodes["depth"].max())),
        calib_slope=slope,
        calib_intercept=offset,
        horizon_days=horizon_days,
    )
    model.validate()
    return model


# -- evaluation ---------------------------------------------------------------------------


def classification_metrics(
    labels: npt.NDArray[np.int8], risk: FloatArray, bins: int = 5
) -> dict[str, Any]:
    """ROC-AUC, log loss, Brier score and a calibration table (equal-count bins)."""
    clipped = np.clip(risk, 1e-6, 1 - 1e-6)
    order = np.argsort(risk, kind="stable")
    table = []
    ece = 0.0
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk) == 0:
            continue
        predicted = float(risk[chunk].mean())
        observed = float(labels[chunk].mean())
        ece += len(chunk) / len(labels) * abs(predicted - observed)
        table.append({"users": len(chunk), "predicted": predicted, "observed": observed})
    return {
        "roc_auc": _auc(labels, risk),
        "log_loss": float(log_loss(labels, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(labels, risk)),
        "calibration_error": ece,
        "calibration": table,
    }


def _auc(labels: npt.NDArray[np.int8], risk: FloatArray) -> float:
    if len(set(labels.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(labels, risk))


def fit_recency_baseline(
    values: FloatArray, labels: npt.NDArray[np.int8]
) -> Callable[[FloatArray], FloatArray]:
    """A logistic regression on log(days since last event) alone: the bar to beat."""
    column = FEATURE_NAMES.index("days_since_last_event")

    def recency(v: FloatArray) -> FloatArray:
        feature: FloatArray = np.log1p(np.maximum(v[:, column], 0.0)).reshape(-1, 1)
        return feature

    baseline = LogisticRegression(max_iter=1000).fit(recency(values), labels)

    def predict(v: FloatArray) -> FloatArray:
        out: FloatArray = baseline.predict_proba(recency(v))[:, 1]
        return out

    return predict


# -- training -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainingReport:
    model: ChurnModel
    as_of: datetime
    evaluation_cutoff: datetime
    training_cutoffs: tuple[datetime, ...]
    training_rows: int
    training_churn_rate: float
    evaluation_rows: int
    evaluation_churn_rate: float
    model_metrics: dict[str, Any]
    baseline_metrics: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


def training_cutoffs(
    first_event: datetime,
    evaluation_cutoff: datetime,
    *,
    horizon_days: int,
    step_days: int,
    max_cutoffs: int,
    min_history_days: int = 7,
) -> list[datetime]:
    """Training cut-offs, newest first, whose label windows close by the evaluation cut-off.

    Training therefore sees only outcomes known at the evaluation cut-off, as it would in
    production, so the evaluation is an honest forecast.
    """
    cutoffs: list[datetime] = []
    cutoff = evaluation_cutoff - timedelta(days=horizon_days)
    while cutoff >= first_event + timedelta(days=min_history_days) and len(cutoffs) < max_cutoffs:
        cutoffs.append(cutoff)
        cutoff -= timedelta(days=step_days)
    return cutoffs


def default_as_of(session: Session, now: datetime) -> datetime:
    """The end of the recorded history, never later than now.

    On a live system this is (almost) now; on imported history it is where the data ends, so
    the label windows are not empty because the data stopped.
    """
    span = churn_data.history_span(session)
    if span is None:
        return now
    return min(span[1], now)


def train_churn(
    db: Database,
    *,
    as_of: datetime,
    horizon_days: int,
    step_days: int = 14,
    max_cutoffs: int = 12,
    now: datetime | None = None,
) -> TrainingReport:
    """Build labelled snapshots, fit, evaluate on the latest unused cut-off, store as active.

    The evaluation cut-off is ``as_of - horizon_days`` (its label window ends at ``as_of``);
    training uses earlier cut-offs every ``step_days``.
    """
    if horizon_days < 1:
        raise ValueError("horizon_days must be at least 1")
    trained_at = now or utcnow()
    evaluation_cutoff = as_of - timedelta(days=horizon_days)
    with db.reader() as session:
        span = churn_data.history_span(session)
        if span is None or span[0] >= evaluation_cutoff:
            raise ValueError(
                f"not enough history: need interactions before {evaluation_cutoff.isoformat()} "
                f"(as_of minus {horizon_days} days)"
            )
        cutoffs = training_cutoffs(
            span[0],
            evaluation_cutoff,
            horizon_days=horizon_days,
            step_days=step_days,
            max_cutoffs=max_cutoffs,
        )
        if not cutoffs:
            raise ValueError(
                "not enough history for a training cut-off: need about "
                f"{2 * horizon_days + 7} days of interactions before as_of"
            )
        train_tables = [churn_features(session, c) for c in cutoffs]
        train_labels = [
            churn_labels(session, t.user_ids, t.as_of, horizon_days) for t in train_tables
        ]
        evaluation = churn_features(session, evaluation_cutoff)
        evaluation_labels = churn_labels(
            session, evaluation.user_ids, evaluation_cutoff, horizon_days
        )
    x_train = np.vstack([t.values for t in train_tables])
    y_train = np.concatenate(train_labels)
    if len(evaluation.user_ids) == 0:
        raise ValueError("no users with history at the evaluation cut-off")

    version = new_version(trained_at)
    model = fit_churn_model(x_train, y_train, horizon_days=horizon_days, version=version)
    baseline = fit_recency_baseline(x_train, y_train)
    model_risk = model.risk(evaluation.values)
    baseline_risk = baseline(evaluation.values)
    model_metrics = classification_metrics(evaluation_labels, model_risk)
    baseline_metrics = classification_metrics(evaluation_labels, baseline_risk)
    # Users silent for longer than the horizon are easy; report the rest on their own too.
    recent = evaluation.values[:, FEATURE_NAMES.index("days_since_last_event")] <= horizon_days
    for found, risk in ((model_metrics, model_risk), (baseline_metrics, baseline_risk)):
        found["roc_auc_recently_active"] = _auc(evaluation_labels[recent], risk[recent])
    params: dict[str, Any] = {
        "as_of": as_of.isoformat(),
        "horizon_days": horizon_days,
        "step_days": step_days,
        "evaluation_cutoff": evaluation_cutoff.isoformat(),
        "training_cutoffs": [c.isoformat() for c in cutoffs],
        "features": list(FEATURE_NAMES),
        "classifier": "gradient-boosted trees + Platt scaling",
        "trees": len(model.tree_roots),
    }
    report = TrainingReport(
        model=model,
        as_of=as_of,
        evaluation_cutoff=evaluation_cutoff,
        training_cutoffs=tuple(cutoffs),
        training_rows=len(y_train),
        training_churn_rate=float(y_train.mean()),
        evaluation_rows=len(evaluation_labels),
        evaluation_churn_rate=float(evaluation_labels.mean()),
        model_metrics=model_metrics,
        baseline_metrics=baseline_metrics,
        params=params,
    )
    metrics = {
        **{k: _json_number(v) for k, v in model_metrics.items()},
        "baseline": {k: _json_number(v) for k, v in baseline_metrics.items()},
        "training_rows": report.training_rows,
        "evaluation_rows": report.evaluation_rows,
        "evaluation_churn_rate": report.evaluation_churn_rate,
    }
    with db.writer() as session:
        model_store.store_active_model(
            session,
            kind=model_store.CHURN,
            version=version,
            artifact=model.to_bytes(),
            params=params,
            metrics=metrics,
            now=trained_at,
        )
    return report


def _json_number(value: Any) -> Any:
    # JSON has no NaN; a one-class evaluation has no AUC.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_report(report: TrainingReport) -> str:
    """The metrics table printed by ``recgrpc train-churn``."""
    m, b = report.model_metrics, report.baseline_metrics
    lines = [
        f"churn model {report.model.version} (active), horizon {report.model.horizon_days} days",
        f"training: {len(report.training_cutoffs)} cut-offs "
        f"{report.training_cutoffs[-1]:%Y-%m-%d}..{report.training_cutoffs[0]:%Y-%m-%d}, "
        f"{report.training_rows} user snapshots, churn rate {report.training_churn_rate:.3f}",
        f"evaluation: cut-off {report.evaluation_cutoff:%Y-%m-%d %H:%M} UTC, "
        f"{report.evaluation_rows} users, churn rate {report.evaluation_churn_rate:.3f}",
        "",
        f"{'metric':<22}{'model':>10}{'recency-only':>14}",
    ]
    for key, label in (
        ("roc_auc", "ROC-AUC"),
        ("roc_auc_recently_active", f"ROC-AUC active<={report.model.horizon_days}d"),
        ("log_loss", "log loss"),
        ("brier", "Brier score"),
        ("calibration_error", "calibration error"),
    ):
        lines.append(f"{label:<22}{m[key]:>10.4f}{b[key]:>14.4f}")
    lines += [
        "",
        "calibration (model, equal-count bins):",
        f"{'users':>8}{'predicted':>11}{'observed':>10}",
    ]
    lines += [
        f"{row['users']:>8}{row['predicted']:>11.3f}{row['observed']:>10.3f}"
        for row in m["calibration"]
    ]
    return "\n".join(lines)


def format_level_summary(predictions: Sequence[domain.ChurnPrediction], as_of: datetime) -> str:
    """The per-level table printed by ``recgrpc score-churn``."""
    total = len(predictions)
    version = predictions[0].model_version if predictions else "-"
    lines = [
        f"scored {total} users as of {as_of:%Y-%m-%d %H:%M} UTC with {version}",
        f"{'level':<8}{'users':>8}{'share':>8}{'mean risk':>11}",
    ]
    for level in domain.RiskLevel:
        risks = [p.risk for p in predictions if p.level is level]
        share = len(risks) / total if total else 0.0
        mean = sum(risks) / len(risks) if risks else 0.0
        lines.append(f"{level.value:<8}{len(risks):>8}{share:>8.1%}{mean:>11.3f}")
    return "\n".join(lines)


# -- serving ------------------------------------------------------------------------------


def risk_level(risk: float, medium: float, high: float) -> domain.RiskLevel:
    if risk >= high:
        return domain.RiskLevel.HIGH
    if risk >= medium:
        return domain.RiskLevel.MEDIUM
    return domain.RiskLevel.LOW


def prediction_row(prediction: domain.ChurnPrediction) -> dict[str, Any]:
    return {
        "user_id": prediction.user_id,
        "as_of": prediction.as_of,
        "risk": prediction.risk,
        "level": prediction.level.value,
        "factors": [
            {"name": f.name, "value": f.value, "contribution": f.contribution}
            for f in prediction.factors
        ],
        "model_version": prediction.model_version,
        "horizon_days": prediction.horizon_days,
        "predicted_at": prediction.predicted_at,
    }


class ActiveChurnModel:
    """Serves the active churn model (a ``ChurnPredictor``) and swaps in newly trained ones.

    ``refresh`` polls the ``models`` table (a running server calls it periodically); until a
    model exists, ``predict`` raises Unavailable naming the command that trains one.
    """

    def __init__(
        self,
        medium_threshold: float,
        high_threshold: float,
        model: ChurnModel | None = None,
        clock: Callable[[], datetime] = utcnow,
        top_factors: int = 5,
    ) -> None:
        self.medium_threshold = medium_threshold
        self.high_threshold = high_threshold
        self.model = model
        self.clock = clock
        self.top_factors = top_factors
        # A stored artifact that failed validation is not fetched again until another replaces it.
        self.rejected_version: str | None = None

    @property
    def version(self) -> str | None:
        """Version of the model in use, None before one is loaded."""
        model = self.model
        return model.version if model is not None else None

    def refresh(self, db: Database) -> bool:
        """Load the active churn model if it changed; True when a new one was loaded.

        Raises ValueError (once per version) when the stored artifact fails validation; the
        model in use stays.
        """
        with db.reader() as session:
            version = model_store.active_model_version(session, model_store.CHURN)
            if version is None or version in (self.version, self.rejected_version):
                return False
            stored = model_store.load_model(session, version)
        if stored is None:
            return False
        try:
            model = ChurnModel.from_bytes(stored.artifact)
        except ValueError:
            self.rejected_version = version
            raise
        self.model = model  # one reference swap: thread-safe for concurrent predictions
        return True

    def predict(self, session: Session, user_id: str, as_of: datetime) -> domain.ChurnPrediction:
        """Score one user as of ``as_of`` (reads only; the caller records the prediction).

        Raises NotFound when the user has no activity by ``as_of`` (checked first), and
        Unavailable while no churn model has been trained.
        """
        model = self.model
        table = churn_features(session, as_of, [user_id])
        if not table.user_ids:
            raise NotFound(f"user {user_id!r} has no recorded activity by {as_of.isoformat()}")
        if model is None:
            raise Unavailable(NO_CHURN_MODEL)
        return self._predictions(model, table)[0]

    def score_all(self, session: Session, as_of: datetime) -> list[domain.ChurnPrediction]:
        """Score every user with history by ``as_of`` and record the predictions (batch)."""
        model = self.model
        if model is None:
            raise Unavailable(NO_CHURN_MODEL)
        table = churn_features(session, as_of)
        predictions = self._predictions(model, table)
        churn_data.record_predictions(session, [prediction_row(p) for p in predictions])
        return predictions

    def _predictions(self, model: ChurnModel, table: FeatureTable) -> list[domain.ChurnPrediction]:
        risks, contributions = model.explain(table.values)
        predicted_at = self.clock()
        return [
            domain.ChurnPrediction(
                user_id=user_id,
                risk=float(risks[i]),
                level=risk_level(float(risks[i]), self.medium_threshold, self.high_threshold),
                factors=model.factors(table.values[i], contributions[i], self.top_factors),
                model_version=model.version,
                predicted_at=predicted_at,
                as_of=table.as_of,
                horizon_days=model.horizon_days,
            )
            for i, user_id in enumerate(table.user_ids)
        ]
