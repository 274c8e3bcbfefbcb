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


def scores(items: F32, users: F32, out: F32 | None = None) -> F32:
    """Scores of ``users`` for every item: ``items @ [1 | user]``.

    ``items`` rows are ``[bias | embedding]`` (``ModelView.items_for``); a user is ``[1 |
    embedding]`` (``ModelView.user_vector``, :func:`with_bias_term`), so the leading 1 adds the
    item's bias. One user (d+1,) gives (items,), into ``out`` when given (serving reuses a
    buffer); one user per row (n, d+1) gives (n, items).
    """
    if users.ndim == 1:
        return np.matmul(items, users, out=out)
    return np.matmul(users, items.T, out=out)


def with_bias_term(embeddings: F32) -> F32:
    """User embeddings (n, d) as the ``[1 | embedding]`` rows :func:`scores` takes."""
    ones = np.ones((embeddings.shape[0], 1), dtype=np.float32)
    return np.hstack([ones, embeddings.astype(np.float32, copy=False)])


def view_scores(
    view: ModelView, user_rows: Sequence[UserRow], history: sparse.csr_matrix | None = None
) -> ScoreFn:
    """A ScoreFn (rows of ``user_rows`` -> scores) through the serving view's HYBRID vectors,
    blended with its EASE part from ``history`` (users x catalogue recency weights) if any."""
    items = view.items_for(Algorithm.HYBRID)

    def score(rows: npt.NDArray[np.int64]) -> F32:
        users, _ = view.user_matrix(Algorithm.HYBRID, [user_rows[r] for r in rows])
        return with_ease(view, scores(items, with_bias_term(users)), history, rows)

    return score


def with_ease(
    view: ModelView, lightfm: F32, history: sparse.csr_matrix | None, rows: npt.NDArray[np.int64]
) -> F32:
    """LightFM's batch scores blended with the view's EASE part, as a request blends them."""
    if view.ease is None or history is None:
        return lightfm
    h = history[rows]
    blended = blend(lightfm, view.ease.batch_scores(h), view.ease.alpha)
    # A user none of whose items EASE covers keeps LightFM's scores, as a request does
    # (``EaseView.for_request``), so the stored top-N and serving give the same numbers.
    covered = view.ease.positions[view.ease.positions >= 0]
    bare = np.asarray(h[:, covered].getnnz(axis=1) == 0)
    if bare.any() and blended is not lightfm:
        blended[bare] = lightfm[bare]
    return blended
