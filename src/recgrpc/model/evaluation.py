"""Offline evaluation on a per-user temporal holdout, and online metrics from impressions.

Offline: each user's most recent positive interactions are held out; a model ranks every item
the user has not seen in training, and we measure precision@k, recall@k, NDCG@k, AUC and
catalogue coverage. The trending baseline is scored on the same holdout, users and exclusions.

Online: click-through rate (clicked items / shown items, from feedback) and precision at
curation (shown items the user interacted with positively within a window after the list
was served), per algorithm and model version.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recgrpc.model.features import InteractionData

F32 = npt.NDArray[np.float32]
ScoreFn = Callable[[npt.NDArray[np.int64]], F32]
"""Scores (len(user_rows) x n_items) for the given user rows of the InteractionData."""

HOLDOUT_FRACTION = 0.2
HOLDOUT_MAX_PER_USER = 1_000_000
"""No cap in practice: a cap turns a long history's holdout into its last few items, and the
blend's choices (recency above all) into ones that fit those but not the user's next 20%."""
HOLDOUT_MIN_PAIRS = 3
"""Users with fewer positive pairs than this are trained on but not evaluated."""


@dataclass(frozen=True)
class Holdout:
    """The train/test split of ``InteractionData``'s positive pairs, plus exclusions."""

    train_user: npt.NDArray[np.int32]
    train_item: npt.NDArray[np.int32]
    train_weight: npt.NDArray[np.float32]
    train_time: npt.NDArray[np.float64]
    test: sparse.csr_matrix
    """users x items, 1 where a held-out positive is."""
    seen: sparse.csr_matrix
    """users x items, 1 where the item must not be recommended (train pairs and negatives)."""
    users: npt.NDArray[np.int64]
    """Rows of users with held-out items, sorted."""
    train_strength: npt.NDArray[np.float32] | None = None
    """``InteractionData.pair_strength`` of the training pairs."""

    @property
    def n_train(self) -> int:
        return int(self.train_user.size)

    @property
    def n_test(self) -> int:
        return int(self.test.nnz)


def temporal_holdout(
    data: InteractionData,
    fraction: float = HOLDOUT_FRACTION,
    max_per_user: int = HOLDOUT_MAX_PER_USER,
    min_pairs: int = HOLDOUT_MIN_PAIRS,
) -> Holdout:
    """Hold out each user's most recent ``fraction`` of positive pairs (at least one, at most
    ``max_per_user``) for users with ``min_pairs`` or more."""
    if not 0 < fraction < 1:
        raise ValueError("fraction must be within (0, 1)")
    shape = (data.n_users, data.n_items)
    users, items, times = data.pair_user, data.pair_item, data.pair_time
    order = np.lexsort((items, times, users))  # by user, then time, ties by item
    su = users[order]
    counts = np.bincount(su, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(su.size) - starts[su]
    from_end = counts[su] - 1 - position
    n_test = np.minimum(max_per_user, np.maximum(1, np.round(fraction * counts))).astype(np.int64)
    n_test[counts < min_pairs] = 0
    is_test = np.zeros(users.size, dtype=np.bool_)
    is_test[order] = from_end < n_test[su]
    train = ~is_test
    test = sparse.csr_matrix(
        (np.ones(int(is_test.sum()), dtype=np.float32), (users[is_test], items[is_test])),
        shape=shape,
    )
    seen_rows = np.concatenate([users[train], data.negative_user])
    seen_cols = np.concatenate([items[train], data.negative_item])
    seen = sparse.csr_matrix(
        (np.ones(seen_rows.size, dtype=np.float32), (seen_rows, seen_cols)), shape=shape
    )
    seen.data[:] = 1.0
    return Holdout(
        train_user=users[train],
        train_item=items[train],
        train_weight=data.pair_weight[train],
        train_time=data.pair_time[train],
        train_strength=data.pair_strength[train],
        test=test,
        seen=seen,
        users=np.unique(users[is_test]).astype(np.int64),
    )


@dataclass(frozen=True)
class Metrics:
    precision: float
    recall: float
    ndcg: float
    auc: float
    coverage: float
    users: int
    k: int = 10

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Metrics:
        return cls(
            precision=float(values["precision"]),
            recall=float(values["recall"]),
            ndcg=float(values["ndcg"]),
            auc=float(values["auc"]),
            coverage=float(values["coverage"]),
            users=int(values["users"]),
            k=int(values.get("k", 10)),
        )


def evaluate(
    scores: ScoreFn,
    holdout: Holdout,
    *,
    k: int = 10,
    users: npt.NDArray[np.int64] | None = None,
    with_auc: bool = True,
    block: int = 512,
) -> Metrics:
    """Rank-based metrics averaged over ``users`` (default: every user with held-out items)."""
    rows_all = holdout.users if users is None else users
    n_items = holdout.test.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)
    totals = np.zeros(4)
    recommended = np.zeros(n_items, dtype=np.bool_)
    for start in range(0, rows_all.size, block):
        rows = rows_all[start : start + block]
        s = np.array(scores(rows), dtype=np.float32, copy=True)
        seen = holdout.seen[rows].tocoo()
        s[seen.row, seen.col] = -np.inf
        truth = holdout.test[rows].toarray() > 0
        kk = min(k, n_items)
        top = np.argpartition(s, n_items - kk, axis=1)[:, n_items - kk :]
        top_scores = np.take_along_axis(s, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        valid = np.isfinite(np.take_along_axis(s, top, axis=1))
        hits = np.take_along_axis(truth, top, axis=1) & valid
        recommended[top[valid]] = True
        n_true = truth.sum(axis=1)
        totals[0] += (hits.sum(axis=1) / k).sum()
        totals[1] += (hits.sum(axis=1) / np.maximum(n_true, 1)).sum()
        dcg = (hits * discounts[:kk]).sum(axis=1)
        totals[2] += (dcg / ideal[np.minimum(n_true, k) - 1]).sum()
        if with_auc:
            totals[3] += _auc(s, truth).sum()
    n = max(rows_all.size, 1)
    return Metrics(
        precision=float(totals[0] / n),
        recall=float(totals[1] / n),
        ndcg=float(totals[2] / n),
        auc=float(totals[3] / n) if with_auc else math.nan,
        coverage=float(recommended.sum()) / max(n_items, 1),
        users=int(rows_all.size),
        k=k,
    )


def _auc(scores: F32, truth: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Per-row AUC of held-out items against unseen non-held-out items (ties count half)."""
    out = np.zeros(scores.shape[0])
    for r in range(scores.shape[0]):
        row = scores[r]
        candidates = np.isfinite(row)
        pos = row[truth[r] & candidates]
        neg = np.sort(row[~truth[r] & candidates])
        if pos.size == 0 or neg.size == 0:
            out[r] = 0.5
            continue
        below = np.searchsorted(neg, pos, side="left")
        ties = np.searchsorted(neg, pos, side="right") - below
        out[r] = float((below + 0.5 * ties).sum()) / (pos.size * neg.size)
    return out


def trending_baseline(
    holdout: Holdout, n_items: int, half_life_days: float
) -> npt.NDArray[np.float32]:
    """Time-decayed popularity from the training pairs, relative to the newest of them."""
    if holdout.train_time.size == 0:
        return np.zeros(n_items, dtype=np.float32)
    newest = float(holdout.train_time.max())
    decay = np.exp2(-(newest - holdout.train_time) / (half_life_days * 86400.0))
    return np.bincount(holdout.train_item, weights=decay, minlength=n_items).astype(np.float32)


def constant_scores(vector: npt.NDArray[np.float32]) -> ScoreFn:
    """A ScoreFn giving every user the same scores (the trending baseline)."""

    def score(rows: npt.NDArray[np.int64]) -> F32:
        return np.broadcast_to(vector, (rows.size, vector.size))

    return score


def sample_users(users: npt.NDArray[np.int64], limit: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """At most ``limit`` of ``users`` (deterministic), sorted."""
    if users.size <= limit:
        return users
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(users, size=limit, replace=False))


# -- online metrics -------------------------------------------------------------------------


@dataclass(frozen=True)
class OnlineMetrics:
    """Per (algorithm, model_version) outcome of served lists."""

    algorithm: str
    model_version: str
    impressions: int
    items_shown: int
    clicks: int
    hits: int

    @property
    def click_through_rate(self) -> float:
        return self.clicks / self.items_shown if self.items_shown else 0.0

    @property
    def precision_at_curation(self) -> float:
        return self.hits / self.items_shown if self.items_shown else 0.0


POSITIVE_TYPES = frozenset(
    {"CLICK", "LIKE", "COMMENT", "SHARE", "PURCHASE", "ADD_TO_CART", "BOOKMARK", "VIEW"}
)


def online_metrics(
    impressions: Iterable[tuple[str, str, str, str, list[str], datetime]],
    feedback: Iterable[tuple[str, str, str, bool, bool]],
    interactions: Iterable[tuple[str, str, str, datetime]],
    window: timedelta = timedelta(hours=24),
) -> list[OnlineMetrics]:
    """CTR and precision at curation per algorithm and model version.

    A click is feedback ``clicked`` on an item of that served list (recset_id). A hit is a
    shown item the user interacted with positively within ``window`` after the list was
    served, whatever the attribution.
    """
    clicked: set[tuple[str, str]] = {(r, i) for r, _u, i, c, _d in feedback if c and r}
    touched: dict[tuple[str, str], list[datetime]] = {}
    for user_id, item_id, kind, at in interactions:
        if kind in POSITIVE_TYPES:
            touched.setdefault((user_id, item_id), []).append(at)
    groups: dict[tuple[str, str], list[int]] = {}
    for recset_id, user_id, algorithm, version, item_ids, served_at in impressions:
        counts = groups.setdefault((algorithm, version), [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += len(item_ids)
        end = served_at + window
        for item_id in item_ids:
            if (recset_id, item_id) in clicked:
                counts[2] += 1
            times = touched.get((user_id, item_id))
            if times and any(served_at <= t <= end for t in times):
                counts[3] += 1
    return [
        OnlineMetrics(algorithm, version, *counts)
        for (algorithm, version), counts in sorted(groups.items())
    ]


def format_online_metrics(rows: Sequence[OnlineMetrics]) -> str:
    """A table: algorithm, model version, impressions, items shown, CTR, precision at curation."""
    if not rows:
        return "no impressions in the window"
    header = (
        f"{'algorithm':<14}{'model':<28}{'lists':>8}{'shown':>9}{'clicks':>8}"
        f"{'CTR':>8}{'hits':>7}{'prec@cur':>10}"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"{r.algorithm:<14}{(r.model_version or '-'):<28}{r.impressions:>8}"
            f"{r.items_shown:>9}{r.clicks:>8}{r.click_through_rate:>8.4f}{r.hits:>7}"
            f"{r.precision_at_curation:>10.4f}"
        )
    return "\n".join(lines)
