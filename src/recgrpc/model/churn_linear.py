"""The churn model as a logistic regression on standardised, log-transformed features.

Its explanations are exact: a factor's contribution is its coefficient times the user's
standardised value, and the intercept plus every contribution is the logit of the risk. The
coefficients are held to the directions in ``MONOTONE_EFFECT`` (a longer silence never lowers the
risk), so each factor moves the risk the plausible way. Fitting is ``fit_linear_model``; the
``.npz`` artifact is in ``churn_artifact``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from recgrpc.model.churn_features import FEATURE_NAMES, MONOTONE_EFFECT
from recgrpc.model.churn_trees import ChurnModel, FloatArray, check_feature_names, sigmoid

LOGISTIC = "logistic"
TREES = "trees"

# Counts and day spans are heavy-tailed: log1p makes a week's silence after a year count like
# one after a month does in relative terms. Rates and trends (already log ratios) stay as they are.
LOG_FEATURES: frozenset[str] = frozenset(
    {
        "days_since_last_event",
        "tenure_days",
        "events_7d",
        "events_30d",
        "events_90d",
        "active_days_30d",
        "impressions_30d",
        "feedback_30d",
        "preferences",
    }
)
L2_STRENGTH = 1.0
"""Ridge penalty on the standardised coefficients (scikit-learn's C = 1)."""


@dataclass(frozen=True, slots=True)
class ChurnLinearModel:
    """risk = sigmoid(intercept + sum_j coef[j] * z[j]) with z the standardised features.

    z[j] = (t[j] - mean[j]) / scale[j], t = log1p(x) for ``log_feature`` columns (else x); an
    undefined value (NaN) counts as the mean, so it contributes nothing.
    """

    version: str
    feature_names: tuple[str, ...]
    log_feature: npt.NDArray[np.bool_]
    mean: FloatArray
    scale: FloatArray
    coef: FloatArray
    intercept: float
    horizon_days: int

    def standardise(self, raw: FloatArray) -> FloatArray:
        x = np.atleast_2d(np.asarray(raw, dtype=np.float64))
        t = np.where(self.log_feature, np.log1p(np.maximum(x, 0.0)), x)
        z: FloatArray = np.where(np.isnan(t), 0.0, (t - self.mean) / self.scale)
        return z

    def score(self, raw: FloatArray) -> FloatArray:
        """The logit of the risk per row of raw features."""
        logit: FloatArray = self.intercept + self.standardise(raw) @ self.coef
        return logit

    def risk(self, raw: FloatArray) -> FloatArray:
        return sigmoid(self.score(raw))

    def explain(self, raw: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Risk per row and each feature's exact contribution to its logit (coef x z)."""
        contributions: FloatArray = self.standardise(raw) * self.coef
        return sigmoid(self.intercept + contributions.sum(axis=1)), contributions

    def validate(self) -> None:
        """Refuse an artifact that would score garbage or break the factor directions."""
        check_feature_names(self.feature_names)
        shape = (len(FEATURE_NAMES),)
        for name in ("log_feature", "mean", "scale", "coef"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"churn model array {name} has the wrong shape")
        numbers = np.concatenate([self.mean, self.scale, self.coef, [self.intercept]])
        if not np.all(np.isfinite(numbers)) or np.any(self.scale <= 0):
            raise ValueError("churn model holds NaN, infinite or non-positive scale values")
        if np.any(self.coef * _directions() < 0):
            raise ValueError("churn model coefficients break the features' monotone directions")
        if self.horizon_days < 1:
            raise ValueError("churn model has a non-positive horizon")


AnyChurnModel = ChurnModel | ChurnLinearModel
"""Either family; both offer risk, explain and validate (factors: ``churn_trees.top_factors``)."""


def family_of(model: AnyChurnModel) -> str:
    return LOGISTIC if isinstance(model, ChurnLinearModel) else TREES


def _directions() -> FloatArray:
    return np.array([MONOTONE_EFFECT[name] for name in FEATURE_NAMES], dtype=np.float64)


def fit_linear_model(
    values: FloatArray,
    labels: npt.NDArray[np.int8],
    *,
    horizon_days: int,
    version: str,
    columns: tuple[str, ...] = FEATURE_NAMES,
) -> ChurnLinearModel:
    """L2-regularised logistic regression with sign-bounded coefficients (L-BFGS-B).

    Only ``columns`` get a coefficient (the rest are fixed at 0), which makes the recency
    baseline this same model on one column.
    """
    if np.bincount(labels, minlength=2).min() == 0:
        raise ValueError("training snapshots hold only one class; need churned and retained users")
    log_feature = np.array([name in LOG_FEATURES for name in FEATURE_NAMES])
    t = np.where(log_feature, np.log1p(np.maximum(values, 0.0)), values)
    defined = ~np.isnan(t)
    counts = defined.sum(axis=0)
    mean = np.where(counts > 0, np.nansum(t, axis=0) / np.maximum(counts, 1), 0.0)
    spread = np.sqrt(np.nansum((t - mean) ** 2, axis=0) / np.maximum(counts, 1))
    scale = np.where(spread > 1e-12, spread, 1.0)
    z = np.where(defined, (t - mean) / scale, 0.0)
    y = labels.astype(np.float64)
    directions = _directions()
    used = np.array([name in columns for name in FEATURE_NAMES])

    def loss(params: FloatArray) -> tuple[float, FloatArray]:
        w, b = params[:-1], params[-1]
        logit = z @ w + b
        # log(1 + e^x) - y x, computed stably.
        value = float(np.sum(np.logaddexp(0.0, logit) - y * logit) + 0.5 * L2_STRENGTH * w @ w)
        residual = sigmoid(logit) - y
        grad = np.concatenate([z.T @ residual + L2_STRENGTH * w, [residual.sum()]])
        return value, grad

    bounds = [
        (0.0, 0.0) if not used[j] else (0.0, None) if d > 0 else (None, 0.0) if d < 0 else
        (None, None)
        for j, d in enumerate(directions)
    ]  # fmt: skip
    result = minimize(
        loss,
        np.zeros(len(FEATURE_NAMES) + 1),
        jac=True,
        method="L-BFGS-B",
        bounds=[*bounds, (None, None)],
        options={"maxiter": 1000},
    )
    coef = np.asarray(result.x[:-1], dtype=np.float64)
    # The bounds hold at the optimum; a -0.0 would still read as the wrong sign to validate.
    coef = np.where(coef * directions < 0, 0.0, coef) + 0.0
    model = ChurnLinearModel(
        version=version,
        feature_names=FEATURE_NAMES,
        log_feature=log_feature,
        mean=mean.astype(np.float64),
        scale=scale.astype(np.float64),
        coef=coef,
        intercept=float(result.x[-1]),
        horizon_days=horizon_days,
    )
    model.validate()
    return model
