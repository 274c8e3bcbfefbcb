"""Churn scoring against the database: features as of a time, the served model, batch scoring."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from recgrpc import domain
from recgrpc.db import Database, churn_data, model_store
from recgrpc.domain import utcnow
from recgrpc.errors import NotFound, Unavailable
from recgrpc.model import churn_artifact
from recgrpc.model.churn_features import FeatureTable, feature_table
from recgrpc.model.churn_linear import AnyChurnModel
from recgrpc.model.churn_predictor import predictions as churn_predictions

NO_CHURN_MODEL = "no churn model has been trained yet; run `recgrpc train-churn`"


def churn_features(
    session: Session, as_of: datetime, user_ids: Sequence[str] | None = None
) -> FeatureTable:
    """Features as of ``as_of`` for ``user_ids`` (None: every user with history by then).

    The single source of features for training and serving. Users with no interaction at or
    before ``as_of`` are absent from the table.
    """
    return feature_table(churn_data.user_aggregates(session, as_of, user_ids), as_of)


def prediction_row(prediction: domain.ChurnPrediction) -> dict[str, Any]:
    """A ``churn_predictions`` row (column name -> value) for ``prediction``."""
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
        model: AnyChurnModel | None = None,
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
            model = churn_artifact.decode(stored.artifact)
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

    def _predictions(
        self, model: AnyChurnModel, table: FeatureTable
    ) -> list[domain.ChurnPrediction]:
        return churn_predictions(
            model,
            table,
            medium_threshold=self.medium_threshold,
            high_threshold=self.high_threshold,
            top_factors=self.top_factors,
            predicted_at=self.clock(),
        )


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
