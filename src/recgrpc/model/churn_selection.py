"""Choosing the churn model family on a later cut-off than any it trained on.

Each candidate family is fitted on the training snapshots and scored on the held-out evaluation
snapshot beside recency alone; the best ROC-AUC wins (rounded to 3 decimals, so a difference
within noise falls to the lower log loss). The winner is then refitted on every labelled
snapshot, the held-out one included, since its labels are known when training runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recgrpc.model.churn_features import FEATURE_NAMES
from recgrpc.model.churn_fitting import classification_metrics, fit_churn_model, roc_auc
from recgrpc.model.churn_linear import LOGISTIC, TREES, AnyChurnModel, fit_linear_model
from recgrpc.model.churn_trees import FloatArray

RECENCY = "recency"
FAMILIES: tuple[str, ...] = (LOGISTIC, TREES)
DESCRIPTION = {
    LOGISTIC: "logistic regression, L2, standardised log features, signed coefficients",
    TREES: "gradient-boosted trees, depth 3, monotone, Platt-scaled",
    RECENCY: "recency alone (logistic regression on log days since last event)",
}
AUC_DECIMALS = 3


def fit_family(
    family: str,
    values: FloatArray,
    labels: npt.NDArray[np.int8],
    *,
    horizon_days: int,
    version: str,
) -> AnyChurnModel:
    """Fit one family (``logistic``, ``trees`` or the ``recency`` baseline) on ``values``."""
    if family == TREES:
        return fit_churn_model(values, labels, horizon_days=horizon_days, version=version)
    columns = ("days_since_last_event",) if family == RECENCY else FEATURE_NAMES
    if family not in (LOGISTIC, RECENCY):
        raise ValueError(f"unknown churn model family {family!r}")
    return fit_linear_model(
        values, labels, horizon_days=horizon_days, version=version, columns=columns
    )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One family's model fitted on the training snapshots, and its held-out metrics."""

    family: str
    model: AnyChurnModel
    metrics: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Selection:
    candidates: tuple[Candidate, ...]
    """Every family tried, in ``FAMILIES`` order."""
    recency: Candidate
    """The recency-alone baseline (reported, never selected)."""
    selected: Candidate

    def by_family(self, family: str) -> Candidate:
        return next(c for c in (*self.candidates, self.recency) if c.family == family)


def evaluate(
    model: AnyChurnModel, values: FloatArray, labels: npt.NDArray[np.int8], horizon_days: int
) -> dict[str, Any]:
    """Held-out metrics, plus ROC-AUC among users active within the horizon (the hard ones)."""
    risk = model.risk(values)
    metrics = classification_metrics(labels, risk)
    recent = values[:, FEATURE_NAMES.index("days_since_last_event")] <= horizon_days
    metrics["roc_auc_recently_active"] = roc_auc(labels[recent], risk[recent])
    return metrics


def _rank(candidate: Candidate) -> tuple[float, float]:
    auc = candidate.metrics["roc_auc"]
    auc = -1.0 if np.isnan(auc) else round(auc, AUC_DECIMALS)
    return (auc, -candidate.metrics["log_loss"])


def select_family(
    train: tuple[FloatArray, npt.NDArray[np.int8]],
    held_out: tuple[FloatArray, npt.NDArray[np.int8]],
    *,
    horizon_days: int,
    version: str,
    families: tuple[str, ...] = FAMILIES,
) -> Selection:
    """Fit every family on ``train``, score it on ``held_out``, keep the best (see module)."""
    x, y = train
    x_eval, y_eval = held_out

    def candidate(family: str) -> Candidate:
        model = fit_family(family, x, y, horizon_days=horizon_days, version=version)
        return Candidate(family, model, evaluate(model, x_eval, y_eval, horizon_days))

    candidates = tuple(candidate(f) for f in families)
    # max keeps the first of equals: FAMILIES lists the simpler family first.
    selected = max(candidates, key=_rank)
    return Selection(candidates=candidates, recency=candidate(RECENCY), selected=selected)
