"""The training job's glue for the LightFM + EASE blend: EASE arrays and user histories.

``model.selection`` chooses the configuration on the holdout; these helpers apply it to the
stored model and build the histories its EASE part is scored with in batch (evaluation, top-N).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recgrpc.model import ease
from recgrpc.model.artifact import RecommenderArrays, holdout_twin_lightfm
from recgrpc.model.evaluation import Holdout
from recgrpc.model.features import InteractionData
from recgrpc.model.representations import ModelView
from recgrpc.model.selection import BlendChoice, covered_items

SELECTION_SCORE_BUDGET = 20_000_000
"""Scores held at once while choosing the blend (users x items float32: 80 MB)."""


def selection_user_limit(n_items: int) -> int:
    """Holdout users the blend is chosen on: up to 1000, fewer for very large catalogues."""
    return max(100, min(1000, SELECTION_SCORE_BUDGET // max(n_items, 1)))


def blend_params(choice: BlendChoice) -> dict[str, Any]:
    """What the artifact's params record of the choice (JSON: no infinity)."""
    return {
        "blend_alpha": choice.alpha,
        "ease_half_life": 0.0 if math.isinf(choice.half_life) else choice.half_life,
        "ease_lambda_scale": choice.lam_scale,
        "ease_min_strength": choice.min_strength,
    }


def with_ease(
    arrays: RecommenderArrays,
    data: InteractionData,
    choice: BlendChoice,
    holdout: Holdout | None = None,
) -> RecommenderArrays:
    """``arrays`` plus EASE fitted on the holdout's training pairs (every positive pair when
    ``holdout`` is None), when the choice uses EASE."""
    if not choice.uses_ease:
        return arrays
    if holdout is None:
        strong = _strong(data.pair_strength, choice.min_strength)
        users, items = data.pair_user[strong], data.pair_item[strong]
    else:
        keep = _pairs(holdout, choice.min_strength)
        users, items = holdout.train_user[keep], holdout.train_item[keep]
    covered = covered_items(users, items, data.n_items)
    model = ease.fit(users, items, data.n_users, covered, choice.lam_scale)
    ids = np.array(data.item_ids, dtype=np.str_)[covered]
    return replace(arrays, ease_items=ids, ease_weights=model.weights)


def holdout_twin(
    arrays: RecommenderArrays, data: InteractionData, holdout: Holdout
) -> RecommenderArrays:
    """What the promotion gate scores of a model served as fitted on everything: its LightFM
    arrays as fitted without the holdout (stored beside the served ones) and its EASE part
    refitted, by its own stored choice, on the holdout's training pairs. EASE is closed form,
    so on unchanged data the active model's twin scores exactly what its training reported."""
    arrays = holdout_twin_lightfm(arrays)
    if arrays.ease_items is None:
        return arrays
    p = arrays.params
    choice = BlendChoice(
        lam_scale=float(p.get("ease_lambda_scale", 1.0)),
        half_life=float(p.get("ease_half_life", 0.0)) or math.inf,
        alpha=float(p.get("blend_alpha", 1.0)),
        ndcg=0.0,
        min_strength=float(p.get("ease_min_strength", 0.0)),
    )
    return with_ease(arrays, data, choice, holdout)


def _strong(strength: npt.NDArray[np.float32], min_strength: float) -> npt.NDArray[np.bool_]:
    if min_strength <= 0:
        return np.ones(strength.size, dtype=np.bool_)
    return strength >= min_strength


def _pairs(holdout: Holdout, min_strength: float) -> npt.NDArray[np.bool_]:
    if holdout.train_strength is None:
        return np.ones(holdout.n_train, dtype=np.bool_)
    return _strong(holdout.train_strength, min_strength)


def ease_history(
    data: InteractionData,
    users: npt.NDArray[np.int32],
    items: npt.NDArray[np.int32],
    times: npt.NDArray[np.float64],
    strength: npt.NDArray[np.float32],
    *,
    half_life: float,
    min_strength: float,
) -> sparse.csr_matrix:
    """Users x items recency weights of the (strong) positive pairs, for scoring EASE in batch."""
    keep = _strong(strength, min_strength)
    shape = (data.n_users, data.n_items)
    return ease.history_matrix(users[keep], items[keep], times[keep], shape, half_life)


def holdout_history(
    view: ModelView, data: InteractionData, holdout: Holdout
) -> sparse.csr_matrix | None:
    """The holdout's training history by the rules of ``view``'s EASE part (None without one)."""
    if view.ease is None:
        return None
    keep = _pairs(holdout, view.ease.min_strength)
    shape = (data.n_users, data.n_items)
    return ease.history_matrix(
        holdout.train_user[keep], holdout.train_item[keep], holdout.train_time[keep], shape,
        view.ease.half_life,
    )  # fmt: skip


def full_history(view: ModelView, data: InteractionData) -> sparse.csr_matrix | None:
    """Every positive pair by the rules of ``view``'s EASE part (for the stored top-N lists)."""
    if view.ease is None:
        return None
    return ease_history(
        data, data.pair_user, data.pair_item, data.pair_time, data.pair_strength,
        half_life=view.ease.half_life, min_strength=view.ease.min_strength,
    )  # fmt: skip
