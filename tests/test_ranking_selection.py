"""The fast selection in model.rerank agrees with the plain definitions it replaces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recgrpc.model.rerank import _diversify, top_allowed


def _exact_top(scores: np.ndarray, k: int) -> list[float]:
    finite = np.sort(scores[np.isfinite(scores)])[::-1]
    return finite[:k].tolist()


@pytest.mark.parametrize("n", [7, 500, 20_000])
@pytest.mark.parametrize("masked_share", [0.0, 0.5, 0.999])
def test_top_allowed_is_the_exact_top_of_the_unmasked_scores(n: int, masked_share: float) -> None:
    rng = np.random.default_rng(n)
    for trial in range(20):
        scores = rng.normal(size=n).astype(np.float32)
        if trial % 4 == 0:  # sorted catalogues defeat a strided sample's estimate
            scores.sort()
        scores[rng.random(n) < masked_share] = -np.inf
        for k in (1, 10, 50):
            top = top_allowed(scores, k)
            assert scores[top].tolist() == _exact_top(scores, k)
            assert len(set(top.tolist())) == top.size


def _greedy(pool_scores: list[float], cats: list[tuple[str, ...]], limit: int, div: float):
    """The textbook MMR loop: re-value every item after every pick."""
    lo, hi = min(pool_scores), max(pool_scores)
    span = hi - lo if hi > lo else 1.0
    chosen: list[int] = []
    for _ in range(min(limit, len(pool_scores))):
        best, best_value = -1, -math.inf
        for j, s in enumerate(pool_scores):
            if j in chosen:
                continue
            repeats = sum(1 for c in cats[j] for p in chosen if c in cats[p])
            value = (s - lo) / span - (div / len(cats[j]) * repeats if cats[j] else 0.0)
            if value > best_value + 1e-9:
                best, best_value = j, value
        chosen.append(best)
    return chosen


def test_lazy_diversify_picks_what_the_textbook_greedy_picks() -> None:
    rng = np.random.default_rng(3)
    names = [f"c{i}" for i in range(6)]
    for _ in range(200):
        size = int(rng.integers(2, 60))
        # Distinct scores (ties may be broken either way by float rounding).
        scores = np.sort(rng.choice(10_000, size, replace=False))[::-1].astype(np.float32)
        cats = [
            tuple(rng.choice(names, int(rng.integers(0, 3)), replace=False).tolist())
            for _ in range(size)
        ]
        div = float(rng.choice([0.05, 0.2, 0.9]))
        pool = np.arange(size, dtype=np.int64)
        lo, hi = float(scores[-1]), float(scores[0])
        got = _diversify(
            pool, scores, lo=lo, span=hi - lo, limit=10, categories=cats, diversity=div
        )
        assert got.tolist() == _greedy(scores.tolist(), cats, 10, div)
