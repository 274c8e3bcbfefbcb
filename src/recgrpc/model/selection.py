"""Choosing the EASE part of the blend and the blend weight on the temporal holdout.

``recgrpc train`` fits LightFM on the holdout's training part first; then, on the same holdout
and users, this module fits EASE for each ridge scale, scores each recency half-life, keeps the
best pair by NDCG@10, and tries blend weights ``alpha`` from LightFM alone (1) to EASE alone
(0). Nothing here is tuned to one data set: every choice is a measurement on the data at hand,
and each candidate's score is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from recgrpc.model import ease
from recgrpc.model.blend import blend
from recgrpc.model.evaluation import Holdout, ScoreFn, evaluate

F32 = npt.NDArray[np.float32]
EASE_ITEMS = 2000
"""Most popular items EASE covers: bounds the artifact (16 MB of float32) and the fit."""
LAM_SCALES = (3.0, 9.0, 27.0)
STRONG = 0.5
"""EASE may learn from strong positives only: pairs worth half a LIKE or more, undecayed (with
the default weights a click, two views or a rating of 4 stars of 5; not one view or 3 stars)."""
HALF_LIVES = (3.0, 5.0, 15.0, 50.0, math.inf)
"""Recency half-lives of a user's history, in events (infinite: every event counts alike)."""
ALPHAS = (1.0, 0.75, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0)
K = 10


@dataclass(frozen=True)
class BlendChoice:
    lam_scale: float
    half_life: float
    alpha: float
    ndcg: float
    min_strength: float = 0.0
    """EASE's positives: pairs with at least this ``pair_strength`` (0: every positive)."""
    candidates: list[dict[str, float]] = field(default_factory=list)
    """Every configuration tried, with its holdout NDCG@10 (``alpha`` 1 is LightFM alone,
    ``half_life`` 0 is none: the candidates are stored as JSON, which has no infinity)."""

    @property
    def uses_ease(self) -> bool:
        return self.alpha < 1.0

    def describe(self) -> str:
        if not self.uses_ease:
            return f"LightFM alone (holdout NDCG@10 {self.ndcg:.4f}; EASE did not help)"
        hl = "none" if math.isinf(self.half_life) else f"{self.half_life:g} events"
        positives = "strong positives" if self.min_strength > 0 else "all positives"
        return (
            f"blend alpha {self.alpha:g} x LightFM + {1 - self.alpha:g} x EASE ({positives}, "
            f"lambda scale {self.lam_scale:g}, recency half-life {hl}): "
            f"holdout NDCG@10 {self.ndcg:.4f}"
        )


def covered_items(
    users: npt.NDArray[np.int32], items: npt.NDArray[np.int32], n_items: int
) -> npt.NDArray[np.int64]:
    """The items EASE covers: the most popular ``EASE_ITEMS`` of the positive pairs."""
    return ease.popular_items(users, items, n_items, EASE_ITEMS)


def choose_blend(
    lightfm: Callable[[npt.NDArray[np.int64]], F32],
    holdout: Holdout,
    n_users: int,
    n_items: int,
    users: npt.NDArray[np.int64],
) -> BlendChoice:
    """The best (ridge scale, half-life, alpha) on ``holdout`` for ``users``.

    ``lightfm`` scores user rows with the model fitted on the holdout's training part.
    """
    shape = (n_users, n_items)
    candidates: list[dict[str, float]] = []
    lf = lightfm(users)
    row_of = {int(r): n for n, r in enumerate(users.tolist())}
    base = evaluate(_rows(lf, row_of), holdout, k=K, users=users, with_auc=False).ndcg
    candidates.append({"alpha": 1.0, "ndcg": base})
    strength = holdout.train_strength
    best: tuple[float, float, float, float] = (-1.0, 0.0, math.inf, 0.0)
    fitted: dict[tuple[float, float], tuple[ease.EaseModel, F32]] = {}
    for min_strength in (0.0, STRONG):
        keep = np.ones(holdout.n_train, dtype=np.bool_)
        if min_strength > 0:
            if strength is None:
                continue
            keep = strength >= min_strength
            if keep.all() or keep.sum() < holdout.n_train // 4:
                continue  # the same pairs as before, or too few to learn from
        u, i, t = holdout.train_user[keep], holdout.train_item[keep], holdout.train_time[keep]
        covered = covered_items(u, i, n_items)
        if covered.size < 2:
            continue
        histories = {hl: ease.history_matrix(u, i, t, shape, hl)[users] for hl in HALF_LIVES}
        for lam in LAM_SCALES:
            model = ease.fit(u, i, n_users, covered, lam)
            for hl, history in histories.items():
                s = ease.scores(model, history)
                ndcg = evaluate(_rows(s, row_of), holdout, k=K, users=users, with_auc=False).ndcg
                candidates.append({"alpha": 0.0, "min_strength": min_strength, "lam_scale": lam,
                                   "half_life": _stored(hl), "ndcg": ndcg})  # fmt: skip
                if ndcg > best[0]:
                    best = (ndcg, lam, hl, min_strength)
                    fitted[(lam, min_strength)] = (model, s)
    if best[0] < 0:
        return BlendChoice(0.0, math.inf, 1.0, base, candidates=candidates)
    _, lam, hl, min_strength = best
    es = fitted[(lam, min_strength)][1]
    choice = (base, 1.0)
    for alpha in ALPHAS[1:-1]:
        mixed = blend(lf, es, alpha)
        ndcg = evaluate(_rows(mixed, row_of), holdout, k=K, users=users, with_auc=False).ndcg
        candidates.append({"alpha": alpha, "min_strength": min_strength, "lam_scale": lam,
                           "half_life": _stored(hl), "ndcg": ndcg})  # fmt: skip
        choice = max(choice, (ndcg, alpha))
    choice = max(choice, (best[0], 0.0))
    return BlendChoice(
        lam, hl, choice[1], choice[0], min_strength=min_strength, candidates=candidates
    )


def _rows(scores: F32, row_of: dict[int, int]) -> ScoreFn:
    """A ScoreFn over precomputed scores of the selection users."""

    def score(rows: npt.NDArray[np.int64]) -> F32:
        return scores[[row_of[int(r)] for r in rows]]

    return score


def selection_lines(choice: BlendChoice | None) -> list[str]:
    """The chosen configuration and a table of every candidate's holdout NDCG@10, the chosen
    one marked, for ``recgrpc train``."""
    if choice is None:
        return []
    header = ("candidate", "positives", "lambda scale", "half-life", "alpha", "NDCG@10")
    rows = [_cells(c) for c in choice.candidates]
    chosen = next((n for n, c in enumerate(choice.candidates) if _is_choice(c, choice)), -1)
    widths = [max(len(r[col]) for r in [header, *rows]) for col in range(len(header))]

    def line(cells: tuple[str, ...], mark: str = "") -> str:
        text = "  ".join(
            cell.ljust(w) if col == 0 else cell.rjust(w)
            for col, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )
        return f"  {text}{mark}".rstrip()

    lines = [f"selected on the holdout: {choice.describe()}", "candidates on the holdout:"]
    lines.append(line(header))
    lines += [line(r, "  <- selected" if n == chosen else "") for n, r in enumerate(rows)]
    return lines


def _cells(c: dict[str, float]) -> tuple[str, ...]:
    if c["alpha"] >= 1.0:
        return ("LightFM alone", "-", "-", "-", "1", f"{c['ndcg']:.4f}")
    kind = "EASE alone" if c["alpha"] <= 0 else "LightFM + EASE"
    positives = "strong" if c.get("min_strength", 0.0) > 0 else "all"
    hl = f"{c['half_life']:g} events" if c["half_life"] > 0 else "none"
    return (kind, positives, f"{c['lam_scale']:g}", hl, f"{c['alpha']:g}", f"{c['ndcg']:.4f}")


def _is_choice(c: dict[str, float], choice: BlendChoice) -> bool:
    if not choice.uses_ease:
        return c["alpha"] >= 1.0
    return (c["alpha"], c.get("min_strength", 0.0), c.get("lam_scale"), c.get("half_life")) == (
        choice.alpha, choice.min_strength, choice.lam_scale, _stored(choice.half_life)
    )  # fmt: skip


def _stored(half_life: float) -> float:
    return 0.0 if math.isinf(half_life) else half_life
