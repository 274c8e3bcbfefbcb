"""Fitting the churn trees: gradient-boosted trees (scikit-learn, depth 3), Platt scaling on
out-of-fold scores, the export to plain arrays, and the offline metrics."""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from recgrpc.model.churn_features import FEATURE_NAMES, MONOTONE_EFFECT
from recgrpc.model.churn_trees import ChurnModel

FloatArray = npt.NDArray[np.float64]

BOOSTING_ROUNDS = 150
MAX_DEPTH = 3
MIN_SAMPLES_LEAF = 20


def new_version(now: datetime) -> str:
    return f"churn-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _classifier(seed: int) -> HistGradientBoostingClassifier:
    # A fixed number of small, slow-learning, direction-constrained trees: no validation
    # split to lose on small histories, and the same model for the same data.
    return HistGradientBoostingClassifier(
        max_iter=BOOSTING_ROUNDS,
        learning_rate=0.05,
        max_depth=MAX_DEPTH,
        max_leaf_nodes=None,
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
        "roc_auc": roc_auc(labels, risk),
        "log_loss": float(log_loss(labels, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(labels, risk)),
        "calibration_error": ece,
        "calibration": table,
    }


def roc_auc(labels: npt.NDArray[np.int8], risk: FloatArray) -> float:
    """ROC-AUC of ``risk`` against ``labels``; NaN when the labels hold one class only."""
    if len(set(labels.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(labels, risk))


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
