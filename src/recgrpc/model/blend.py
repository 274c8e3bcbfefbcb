"""Blending two rankers' scores: each normalised per user, then mixed with one weight ``alpha``.

Raw LightFM and EASE scores live on unrelated scales that also vary from user to user. Each row
is shifted by its median and divided by the gap between its ``k``-th best score and the median,
so a value of 1 means "as good as the user's 10th item" for both models and the mix
``alpha x lightfm + (1 - alpha) x ease`` weighs what matters for a top-10: the head of each list.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
NORM_RANK = 10


def normalise(scores: F32, k: int = NORM_RANK) -> F32:
    """Rows shifted by their median and scaled by (k-th best - median); works on 1-D too."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float32))
    n = s.shape[1]
    kk = min(k, n)
    part = np.partition(s, (n // 2, n - kk), axis=1)
    median = part[:, n // 2 : n // 2 + 1]
    kth = part[:, n - kk : n - kk + 1]
    gap = kth - median
    gap[~(gap > 0)] = 1.0
    out: F32 = (s - median) / gap
    return out.reshape(np.shape(scores))


def blend(lightfm: F32, ease: F32, alpha: float) -> F32:
    """``alpha x normalise(lightfm) + (1 - alpha) x normalise(ease)``."""
    if alpha >= 1.0:
        return lightfm
    if alpha <= 0.0:
        return ease
    out: F32 = alpha * normalise(lightfm) + (1.0 - alpha) * normalise(ease)
    return out
