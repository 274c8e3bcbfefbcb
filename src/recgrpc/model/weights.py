"""The one weight of an event, used by training (``features``) and by serving's fold-in.

By type (``Settings.interaction_weights``); a RATING is scaled by where its value sits on the
rating scale (``Settings.rating_min`` .. ``rating_max``): the middle counts nothing, full marks
as much as a LIKE, the lowest as much against the item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from recgrpc.config import DEFAULT_INTERACTION_WEIGHTS, Settings

RATING = "RATING"
FULL_MARKS_LIKE = "LIKE"
"""The type whose weight a top rating carries."""


@dataclass(frozen=True)
class EventWeights:
    """Signed weight per event: ``weight`` for one, ``weights`` for many (the same formula)."""

    by_type: Mapping[str, float] = field(default_factory=lambda: DEFAULT_INTERACTION_WEIGHTS)
    rating_min: float = 0.5
    rating_max: float = 5.0

    @classmethod
    def of(cls, settings: Settings) -> EventWeights:
        return cls(settings.interaction_weights, settings.rating_min, settings.rating_max)

    def _rating_factor(self, value: npt.NDArray[np.float64] | float) -> npt.NDArray[np.float64]:
        # -1 at the lowest rating, 0 in the middle, +1 at full marks, times a LIKE's weight.
        middle = (self.rating_min + self.rating_max) / 2.0
        half = (self.rating_max - self.rating_min) / 2.0
        full = self.by_type.get(FULL_MARKS_LIKE, DEFAULT_INTERACTION_WEIGHTS[FULL_MARKS_LIKE])
        return np.asarray(full * (np.asarray(value, dtype=np.float64) - middle) / half)

    def weight(self, kind: str, value: float) -> float:
        """The weight of one event of type ``kind`` (a short name) with ``value``."""
        base = float(self.by_type.get(kind, 1.0))
        if kind == RATING:
            base *= float(self._rating_factor(value))
        return base

    def weights(
        self, kinds: Sequence[str], values: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """``weight`` of every event, vectorised."""
        table = {name: float(w) for name, w in self.by_type.items()}
        base = np.array([table.get(t, 1.0) for t in kinds], dtype=np.float64)
        rating = np.array([t == RATING for t in kinds], dtype=np.bool_)
        if rating.any():
            base[rating] *= self._rating_factor(values[rating])
        return base
