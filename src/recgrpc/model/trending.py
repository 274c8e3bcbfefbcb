"""Trending: time-decayed popularity, the cold-start and fallback source."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime

import numpy as np
import numpy.typing as npt

from recgrpc.model.catalog import CatalogIndex


def trending_scores(
    events: Iterable[tuple[str, str, float, datetime]],
    catalog: CatalogIndex,
    now: datetime,
    half_life_days: float,
    weights: Mapping[str, float],
) -> npt.NDArray[np.float32]:
    """Sum of ``weight(type) * 0.5 ** (age / half_life)`` per item, aligned with ``catalog``.

    Negative signals (dislikes) are ignored here: popularity is about attention, and a
    negative total would only push an item below items nobody has seen.
    """
    scores = np.zeros(len(catalog), dtype=np.float64)
    rate = math.log(2.0) / (half_life_days * 86400.0)
    now_ts = now.timestamp()
    position = catalog.position
    for item_id, kind, _value, occurred_at in events:
        idx = position.get(item_id)
        weight = weights.get(kind, 1.0)
        if idx is None or weight <= 0:
            continue
        age = max(0.0, now_ts - occurred_at.timestamp())
        scores[idx] += weight * math.exp(-rate * age)
    return scores.astype(np.float32)
