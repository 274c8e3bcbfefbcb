"""Trending: time-decayed popularity, the cold-start and fallback source."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime

import numpy as np
import numpy.typing as npt

from recgrpc.model.catalog import CatalogIndex


def trending_scores(
    hourly_counts: Iterable[tuple[str, str, int, int]],
    catalog: CatalogIndex,
    now: datetime,
    half_life_days: float,
    weights: Mapping[str, float],
) -> npt.NDArray[np.float32]:
    """Sum of ``weight(type) * 0.5 ** (age / half_life)`` per item, aligned with ``catalog``.

    ``hourly_counts`` holds ``(item_id, type, hour since the epoch, events)``; every event of an
    hour is aged from the middle of that hour. Negative signals (dislikes) are ignored here:
    popularity is about attention, and a negative total would only push an item below items
    nobody has seen.
    """
    position = catalog.position
    index: list[int] = []
    weight: list[float] = []
    hours: list[int] = []
    for item_id, kind, hour, events in hourly_counts:
        idx = position.get(item_id)
        w = weights.get(kind, 1.0)
        if idx is not None and w > 0:
            index.append(idx)
            weight.append(w * events)
            hours.append(hour)
    scores = np.zeros(len(catalog), dtype=np.float64)
    if index:
        age = np.maximum(0.0, now.timestamp() - (np.asarray(hours, dtype=np.float64) + 0.5) * 3600)
        decay = np.exp(-math.log(2.0) / (half_life_days * 86400.0) * age)
        np.add.at(scores, np.asarray(index), np.asarray(weight) * decay)
    return scores.astype(np.float32)
