"""The EASE part of a stored model, aligned with the serving catalogue, and its request step.

At request time the user's newest events (what the server reads anyway, newest first) become
their history: items with a positive total weight, ranked by their newest event and weighed by
``ease.recency_weights``; the scores are a weighted sum of ``len(history)`` rows of the stored
item-to-item matrix, so a request costs ``O(history x covered items)`` however many users the
model has, and events logged after training count at once. The blend with LightFM's scores is
``blend.blend`` with the ``alpha`` chosen by ``recgrpc train``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recgrpc import domain
from recgrpc.model import ease
from recgrpc.model.artifact import RecommenderArrays
from recgrpc.model.blend import blend
from recgrpc.model.weights import EventWeights

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EaseView:
    weights: F32 = field(repr=False)
    """Covered x covered item-to-item weights (rows of items missing from the catalogue too)."""
    positions: npt.NDArray[np.int64] = field(repr=False)
    """Catalogue position of each covered item, -1 when it is not in the catalogue."""
    row_of: dict[int, int] = field(repr=False)
    """Catalogue position -> row of ``weights``."""
    alpha: float
    half_life: float
    min_strength: float
    """History items need this much undecayed weight, in LIKEs (0: any positive total)."""
    n_catalogue: int

    @classmethod
    def build(cls, arrays: RecommenderArrays, positions: Mapping[str, int]) -> EaseView | None:
        if arrays.ease_items is None or arrays.ease_weights is None:
            return None
        pos = np.array([positions.get(i, -1) for i in arrays.ease_items.tolist()], dtype=np.int64)
        half_life = float(arrays.params.get("ease_half_life", 0.0)) or float("inf")
        return cls(
            weights=arrays.ease_weights,
            positions=pos,
            row_of={int(p): r for r, p in enumerate(pos.tolist()) if p >= 0},
            alpha=float(arrays.params.get("blend_alpha", 1.0)),
            half_life=half_life,
            min_strength=float(arrays.params.get("ease_min_strength", 0.0)),
            n_catalogue=len(positions),
        )

    def history(
        self,
        recent: Sequence[domain.RecentInteraction],
        dismissed: frozenset[str],
        positions: Mapping[str, int],
        weights: EventWeights,
    ) -> tuple[npt.NDArray[np.int64], F32]:
        """Rows of ``weights`` and recency weights of the user's positive items (newest first)."""
        totals: dict[int, float] = {}
        order: list[int] = []  # positions by newest event, since ``recent`` is newest first
        for event in recent[: ease.HISTORY_LIMIT]:
            if event.item_id in dismissed:
                continue
            pos = positions.get(event.item_id)
            if pos is None:
                continue
            if pos not in totals:
                order.append(pos)
            totals[pos] = totals.get(pos, 0.0) + weights.weight(event.type.value, event.value)
        like = weights.by_type.get("LIKE", 4.0) or 1.0
        liked = [p for p in order if totals[p] > 0 and totals[p] / like >= self.min_strength]
        ranks = np.arange(len(liked))
        rows = np.array([self.row_of.get(p, -1) for p in liked], dtype=np.int64)
        w = ease.recency_weights(ranks, self.half_life)
        covered = rows >= 0
        return rows[covered], w[covered]

    def scores(self, rows: npt.NDArray[np.int64], w: F32) -> F32:
        """Catalogue-length EASE scores of one history (0 for items it does not cover)."""
        out = np.zeros(self.n_catalogue, dtype=np.float32)
        if rows.size:
            covered = w @ self.weights[rows]
            valid = self.positions >= 0
            out[self.positions[valid]] = covered[valid]
        return out

    def batch_scores(self, history: sparse.csr_matrix) -> F32:
        """Scores (users x catalogue) for rows of history weights over the catalogue."""
        valid = self.positions >= 0
        h = history.tocsc()[:, self.positions[valid]]
        covered = np.asarray(h @ self.weights[valid], dtype=np.float32)
        out = np.zeros((history.shape[0], self.n_catalogue), dtype=np.float32)
        out[:, self.positions[valid]] = covered[:, valid]
        return out

    def for_request(
        self,
        lightfm: F32,
        context: domain.UserContext,
        positions: Mapping[str, int],
        weights: EventWeights,
    ) -> F32:
        """LightFM's scores of one request blended with EASE's from the user's newest events;
        unchanged when none of them is an item EASE covers."""
        rows, w = self.history(context.recent, context.dismissed_item_ids, positions, weights)
        if rows.size == 0:
            return lightfm
        return blend(lightfm, self.scores(rows, w), self.alpha)

    def blend_into(
        self,
        scores: F32,
        context: domain.UserContext,
        positions: Mapping[str, int],
        weights: EventWeights,
    ) -> None:
        """``for_request`` written back into ``scores`` (the ranking's reused buffer)."""
        blended = self.for_request(scores, context, positions, weights)
        if blended is not scores:
            np.copyto(scores, blended)
