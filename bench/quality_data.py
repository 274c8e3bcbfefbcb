"""Ranking quality through the service on a MovieLens-style data set (see bench/quality.py).

The protocol (the data set's own README): positives are ratings >= 4; each user's ratings sorted
by time, the first 80% (rounded up) are training history and the rest the test part; the
training part is imported as RATING interactions (value = stars, occurred_at = the timestamp) and
the movies as items (title, genres as categories); each user with a test positive is asked for 10
items, and items rated in training never count as hits. Precision@10, recall@10 and NDCG@10
(binary gains, ideal DCG over min(test positives, 10)) are averaged over those users.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import sparse

POSITIVE_STARS = 4.0
TRAIN_SHARE = 0.8
K = 10
EASE_LAMBDA = 200.0
Event = tuple[int, str, str, float]
"""(unix seconds, item_id, type, value) of one event."""
POSITIVE_TYPES = frozenset({"LIKE", "PURCHASE", "ADD_TO_CART", "BOOKMARK", "SHARE"})


def is_positive(kind: str, value: float) -> bool:
    """A test positive: a rating of 4 stars or more, or an explicit sign of liking."""
    return value >= POSITIVE_STARS if kind == "RATING" else kind in POSITIVE_TYPES


@dataclass(frozen=True)
class Split:
    """The training part (what is imported) and the test positives of every user."""

    items: list[tuple[str, str, str]]
    """(item_id, title, '|'-joined genres) of every movie."""
    train: list[tuple[str, str, str, float, int]]
    """(user_id, item_id, type, value, unix seconds) of the training part."""
    test_positives: dict[str, set[str]]
    """Users with at least one test positive -> those items."""

    @property
    def train_rated(self) -> dict[str, set[str]]:
        rated: dict[str, set[str]] = {}
        for user, item, _, _, _ in self.train:
            rated.setdefault(user, set()).add(item)
        return rated


def split_events(
    items: list[tuple[str, str, str]], by_user: dict[str, list[tuple[int, str, str, float]]]
) -> Split:
    """The protocol's per-user temporal split of (unix seconds, item, type, value) events."""
    train: list[tuple[str, str, str, float, int]] = []
    test: dict[str, set[str]] = {}
    for user, events in by_user.items():
        events.sort(key=lambda e: e[0])  # stable: ties keep the file's order
        cut = math.ceil(TRAIN_SHARE * len(events))
        train.extend((user, item, kind, value, at) for at, item, kind, value in events[:cut])
        seen = {item for _, item, _, _ in events[:cut]}
        positives = {i for _, i, k, v in events[cut:] if is_positive(k, v) and i not in seen}
        if positives:
            test[user] = positives
    return Split(items=items, train=train, test_positives=test)


def read_ratings(folder: Path) -> tuple[list[tuple[str, str, str]], dict[str, list[Event]]]:
    """``movies.csv`` as (item_id, title, genres) and ``ratings.csv`` by user, unsplit."""
    by_user: dict[str, list[Event]] = {}
    with (folder / "ratings.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_user.setdefault(row["userId"], []).append(
                (int(row["timestamp"]), row["movieId"], "RATING", float(row["rating"]))
            )
    items = []
    with (folder / "movies.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            genres = "" if row["genres"].startswith("(no genres") else row["genres"]
            items.append((row["movieId"], row["title"], genres))
    return items, by_user


def read_split(folder: Path) -> Split:
    """Read ``ratings.csv`` and ``movies.csv`` and split them by the protocol."""
    return split_events(*read_ratings(folder))


def write_import_files(split: Split, folder: Path) -> tuple[Path, Path]:
    """The CSV files ``recgrpc import items`` / ``import interactions`` read."""
    items_path, events_path = folder / "items.csv", folder / "interactions.csv"
    with items_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "title", "categories"])
        writer.writerows(split.items)
    with events_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "type", "value", "occurred_at"])
        for user, item, kind, value, at in split.train:
            writer.writerow([user, item, kind, f"{value:g}", at])
    return items_path, events_path


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    ndcg: float
    users: int

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "ndcg": self.ndcg,
                "users": self.users}  # fmt: skip


def score_lists(
    lists: Mapping[str, Sequence[str]],
    test_positives: Mapping[str, set[str]],
    train_rated: Mapping[str, set[str]],
) -> Scores:
    """The protocol's metrics for ``lists`` (user -> ranked item ids; missing users score 0)."""
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    totals = np.zeros(3)
    for user, truth in test_positives.items():
        rated = train_rated.get(user, set())
        ranked = [i for i in lists.get(user, ()) if i not in rated][:K]
        hits = np.array([i in truth for i in ranked] + [False] * (K - len(ranked)))
        totals[0] += hits.sum() / K
        totals[1] += hits.sum() / len(truth)
        totals[2] += (hits * discounts).sum() / discounts[: min(len(truth), K)].sum()
    n = max(len(test_positives), 1)
    return Scores(*(float(t / n) for t in totals), users=len(test_positives))


def _positive_matrix(
    split: Split,
) -> tuple[sparse.csr_matrix, list[str], list[str], dict[str, int], dict[str, int]]:
    users = sorted({u for u, _, _, _, _ in split.train})
    items = sorted({i for _, i, _, _, _ in split.train})
    u_pos = {u: n for n, u in enumerate(users)}
    i_pos = {i: n for n, i in enumerate(items)}
    rows = [(u_pos[u], i_pos[i]) for u, i, t, v, _ in split.train if is_positive(t, v)]
    r, c = np.array(rows).T
    x = sparse.csr_matrix(
        (np.ones(r.size, dtype=np.float64), (r, c)), shape=(len(users), len(items))
    )
    x.data[:] = 1.0
    return x, users, items, u_pos, i_pos


def _top_lists(
    scores: npt.NDArray[np.float64], split: Split, users: Iterable[str],
    items: Sequence[str], u_pos: Mapping[str, int], i_pos: Mapping[str, int],
) -> dict[str, list[str]]:  # fmt: skip
    rated = split.train_rated
    lists: dict[str, list[str]] = {}
    for user in users:
        row = scores[u_pos[user]].copy() if scores.ndim == 2 else scores.copy()
        row[[i_pos[i] for i in rated.get(user, ()) if i in i_pos]] = -np.inf
        top = np.argsort(-row, kind="stable")[:K]
        lists[user] = [items[t] for t in top]
    return lists


def baselines(split: Split) -> dict[str, dict[str, list[str]]]:
    """Lists of the anchors: popularity (count of training positives) and EASE (lambda 200)."""
    x, _, items, u_pos, i_pos = _positive_matrix(split)
    users = [u for u in split.test_positives if u in u_pos]
    popularity = np.asarray(x.sum(axis=0)).ravel()
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += EASE_LAMBDA
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    ease = np.asarray(x[[u_pos[u] for u in users]] @ b)
    ease_pos = {u: n for n, u in enumerate(users)}
    return {
        "popularity": _top_lists(popularity, split, users, items, u_pos, i_pos),
        "EASE": _top_lists(ease, split, users, items, ease_pos, i_pos),
    }
