"""EASE item-to-item model (Steck, 2019) over the most popular items, and per-user history.

EASE learns an item x item weight matrix ``B`` in closed form from the Gram matrix of positive
(user, item) pairs: ``P = (XᵀX + λI)⁻¹``, ``B = -P / diag(P)``, zero diagonal. A user's scores
are ``h @ B`` for their history vector ``h``. ``B`` is dense, so it is fitted over the
``limit`` most popular items only: that bounds the artifact (``limit²`` float32) and the
inversion, while the long tail is still ranked by LightFM in the blend.

A user's history weighs each positive item by its recency *among that user's own events*
(``2^(-rank / half_life)``, rank 0 = newest), so old imported histories count like new ones
and the same rule applies at serving time to the newest events the server reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

F32 = npt.NDArray[np.float32]
HISTORY_LIMIT = 100
"""Newest positive items per user that make up their history (the server reads this many)."""


@dataclass(frozen=True)
class EaseModel:
    items: npt.NDArray[np.int64]
    """Positions (in the training item order) of the items ``weights`` covers."""
    weights: F32
    """``len(items) x len(items)`` item-to-item weights, zero diagonal."""
    lam: float
    """The ridge penalty actually used (``lam_scale`` x mean item popularity)."""


def popular_items(
    users: npt.NDArray[np.integer], items: npt.NDArray[np.integer], n_items: int, limit: int
) -> npt.NDArray[np.int64]:
    """The ``limit`` items with the most positive users (ties by position), sorted by position."""
    counts = np.bincount(items, minlength=n_items)
    nonzero = np.flatnonzero(counts)
    if nonzero.size > limit:
        order = np.lexsort((nonzero, -counts[nonzero]))
        nonzero = nonzero[order[:limit]]
    return np.sort(nonzero).astype(np.int64)


def fit(
    users: npt.NDArray[np.integer],
    items: npt.NDArray[np.integer],
    n_users: int,
    covered: npt.NDArray[np.int64],
    lam_scale: float,
) -> EaseModel:
    """EASE on the binary positive pairs (users, items), over the ``covered`` item positions.

    ``λ = lam_scale x`` the mean diagonal of the Gram matrix (the mean number of positive users
    per covered item), so one scale means the same on small and large data.
    """
    column = np.full(int(max(items.max(initial=0), covered.max(initial=0))) + 1, -1)
    column[covered] = np.arange(covered.size)
    keep = column[items] >= 0
    x = sparse.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float64), (users[keep], column[items[keep]])),
        shape=(n_users, covered.size),
    )
    x.data[:] = 1.0  # duplicate pairs count once
    gram = (x.T @ x).toarray()
    lam = lam_scale * max(float(np.diag(gram).mean()), 1.0)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = p / (-np.diag(p))[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return EaseModel(items=covered, weights=b.astype(np.float32), lam=lam)


def recency_weights(ranks: npt.NDArray[np.integer], half_life: float) -> F32:
    """``2^(-rank / half_life)``; an infinite half-life weighs every rank 1."""
    if math.isinf(half_life):
        return np.ones(ranks.size, dtype=np.float32)
    return np.exp2(-ranks / half_life).astype(np.float32)


def history_matrix(
    users: npt.NDArray[np.integer],
    items: npt.NDArray[np.integer],
    times: npt.NDArray[np.float64],
    shape: tuple[int, int],
    half_life: float,
    *,
    limit: int = HISTORY_LIMIT,
) -> sparse.csr_matrix:
    """users x items recency weights of each user's newest ``limit`` positive pairs."""
    order = np.lexsort((-items, -times, users))  # by user, newest first
    su = users[order]
    counts = np.bincount(su, minlength=shape[0])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(su.size) - starts[su]
    keep = rank < limit
    w = recency_weights(rank[keep], half_life)
    return sparse.csr_matrix((w, (su[keep], items[order][keep])), shape=shape)


def scores(model: EaseModel, history: sparse.csr_matrix) -> F32:
    """Scores (history rows x all items); items ``model`` does not cover score 0."""
    out = np.zeros(history.shape, dtype=np.float32)
    out[:, model.items] = history[:, model.items] @ model.weights
    return out
