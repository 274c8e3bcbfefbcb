"""Churn predictions from a model and a feature table: risk, level and the top factors."""

from __future__ import annotations

from datetime import datetime

from recgrpc import domain
from recgrpc.model.churn_features import FeatureTable
from recgrpc.model.churn_linear import AnyChurnModel
from recgrpc.model.churn_trees import top_factors as factors


def risk_level(risk: float, medium: float, high: float) -> domain.RiskLevel:
    """The level of ``risk`` given the MEDIUM and HIGH thresholds."""
    if risk >= high:
        return domain.RiskLevel.HIGH
    if risk >= medium:
        return domain.RiskLevel.MEDIUM
    return domain.RiskLevel.LOW


def predictions(
    model: AnyChurnModel,
    table: FeatureTable,
    *,
    medium_threshold: float,
    high_threshold: float,
    top_factors: int,
    predicted_at: datetime,
) -> list[domain.ChurnPrediction]:
    """One prediction per row of ``table`` (all rows explained in batches)."""
    risks, contributions = model.explain(table.values)
    return [
        domain.ChurnPrediction(
            user_id=user_id,
            risk=float(risks[i]),
            level=risk_level(float(risks[i]), medium_threshold, high_threshold),
            factors=factors(model.feature_names, table.values[i], contributions[i], top_factors),
            model_version=model.version,
            predicted_at=predicted_at,
            as_of=table.as_of,
            horizon_days=model.horizon_days,
        )
        for i, user_id in enumerate(table.user_ids)
    ]
