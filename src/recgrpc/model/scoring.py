"""The one recommender score: item bias + user embedding · item embedding.

Training's evaluation, the top-N lists written after training and serving all score through
:func:`scores`, so the numbers a user is served are the numbers the model was judged on
(``tests/test_scoring.py`` compares the paths). User biases are left out: they shift every item
of a user alike and so never change a ranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recgrpc.domain import Algorithm
from recgrpc.model.blend import blend
from recgrpc.model.evaluation import ScoreFn
from recgrpc.model.representations import ModelView

F32 = npt.NDArray[np.float32]

UserRow = tuple[str, Mapping[str, float], Mapping[str, str]]
"""(user_id, preferences, attributes): what a user vector is built from."""


def scores(items: F32, users: F32) -> F32:
    """Scores of ``users`` for every item.

    ``items`` rows are ``[bias | embedding]`` (``ModelView.items_for``); ``users`` is one user's
    embedding (d,) giving (items,), or one per row (n, d) giving (n, items).
    """
    if users.ndim == 1:
        one: F32 = items[:, 1:] @ users
        one += items[:, 0]
        return one
    out: F32 = users @ items[:, 1:].T
    out += items[:, 0][None, :]
    return out


def view_scores(
    view: ModelView, user_rows: Sequence[UserRow], history: sparse.csr_matrix | None = None
) -> ScoreFn:
    """A ScoreFn (rows of ``user_rows`` -> scores) through the serving view's HYBRID vectors,
    blended with its EASE part from ``history`` (users x catalogue recency weights) if any."""
    items = view.items_for(Algorithm.HYBRID)

    def score(rows: npt.NDArray[np.int64]) -> F32:
        users, _ = view.user_matrix(Algorithm.HYBRID, [user_rows[r] for r in rows])
        return with_ease(view, scores(items, users), history, rows)

    return score


def with_ease(
    view: ModelView, lightfm: F32, history: sparse.csr_matrix | None, rows: npt.NDArray[np.int64]
) -> F32:
    """LightFM's batch scores blended with the view's EASE part, as a request blends them."""
    if view.ease is None or history is None:
        return lightfm
    return blend(lightfm, view.ease.batch_scores(history[rows]), view.ease.alpha)
