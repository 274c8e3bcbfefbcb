"""The churn model as plain arrays: gradient-boosted trees walked by numpy, Platt-calibrated.

The contribution of a factor is how much the user's risk would fall (or rise) if that factor
alone were at its typical value, so a factor reported as raising the risk does raise it. Fitting
is in ``churn_fitting``, the ``.npz`` artifact in ``churn_artifact``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.model.churn_features import FEATURE_NAMES

FloatArray = npt.NDArray[np.float64]

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
        return sigmoid(self.calib_slope * self.score(raw) + self.calib_intercept)

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
        return top_factors(self.feature_names, raw_row, contributions, top)

    def validate(self) -> None:
        """Refuse an artifact that could not be walked safely or would score garbage."""
        check_feature_names(self.feature_names)
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


def check_feature_names(names: tuple[str, ...]) -> None:
    if names != FEATURE_NAMES:
        raise ValueError(
            "churn model was trained on other features; retrain with `recgrpc train-churn`"
        )


def top_factors(
    names: tuple[str, ...], raw_row: FloatArray, contributions: FloatArray, top: int
) -> list[domain.ChurnFactor]:
    """The ``top`` factors by the size of their contribution, for either model family.

    Undefined values (a rate without exposure) still count in the risk but are not listed,
    having no value to show.
    """
    order = np.argsort(-np.abs(contributions), kind="stable")
    listed = [
        domain.ChurnFactor(
            name=names[j], value=float(raw_row[j]), contribution=float(contributions[j])
        )
        for j in order
        if contributions[j] != 0.0 and not math.isnan(raw_row[j])
    ]
    return listed[:top]


def sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))
    return out
