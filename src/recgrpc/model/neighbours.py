"""Item-to-item neighbours: sparse top-k co-occurrence tables and a TF-IDF content index.

Behaviour neighbours come from co-occurrence in users' positive histories, normalised so that
popular items do not dominate (``cosine``, ``jaccard`` or ``lift``; bench/similar_quality.py
compares them). Association rules for "frequently together" use the same machinery on sessions
(a user's events split where the gap exceeds a window) with ``lift`` and a minimum support.

Co-occurrence is computed a block of items at a time and only each row's ``k`` best entries are
kept, so memory stays O(items x k) plus one block, never a dense items x items matrix. Content
neighbours are not tabulated: an item's features are shared by thousands of items (a category),
which makes the full table quadratic, so ``ContentIndex`` keeps the L2-normalised TF-IDF rows and
answers one item by a sparse matrix-vector product.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import sparse

MEASURES = ("asymmetric", "cosine", "jaccard", "lift")
DEFAULT_ALPHA = 0.8
"""Asymmetric cosine's exponent: 0.5 is cosine, 1 is the plain conditional probability."""
DEFAULT_K = 100
BLOCK_PRODUCTS = 4_000_000
"""Co-occurrence products computed per block (bounds the block's temporary memory)."""

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    ["a", "an", "and", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with"]
)


@dataclass(frozen=True)
class NeighbourTable:
    """Row ``i`` lists item ``i``'s neighbours best first: ``indices[indptr[i]:indptr[i+1]]``."""

    indptr: I64
    indices: I32
    scores: F32

    @property
    def n_items(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def row(self, item: int) -> tuple[I32, F32]:
        start, end = int(self.indptr[item]), int(self.indptr[item + 1])
        return self.indices[start:end], self.scores[start:end]

    def counts(self) -> I64:
        return np.diff(self.indptr)

    def validate(self, n_items: int) -> None:
        """``ValueError`` unless the arrays form a table over ``n_items`` items."""
        indptr, indices, scores = self.indptr, self.indices, self.scores
        if indptr.shape != (n_items + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise ValueError("neighbour table indptr is malformed")
        if indices.shape != scores.shape or indptr[-1] != indices.shape[0]:
            raise ValueError("neighbour table has inconsistent lengths")
        if indices.size and (indices.min() < 0 or indices.max() >= n_items):
            raise ValueError("neighbour index out of range")
        if not np.isfinite(scores).all():
            raise ValueError("neighbour scores contain NaN or infinite values")

    @classmethod
    def empty(cls, n_items: int) -> NeighbourTable:
        return cls(
            np.zeros(n_items + 1, dtype=np.int64),
            np.zeros(0, dtype=np.int32),
            np.zeros(0, dtype=np.float32),
        )


def baskets_matrix(
    basket: npt.ArrayLike, item: npt.ArrayLike, n_baskets: int, n_items: int
) -> sparse.csr_matrix:
    """Binary baskets x items CSR (a basket is a user's history, or one session)."""
    rows = np.asarray(basket, dtype=np.int64)
    cols = np.asarray(item, dtype=np.int64)
    ones = np.ones(rows.size, dtype=np.float32)
    matrix = sparse.csr_matrix((ones, (rows, cols)), shape=(n_baskets, n_items))
    matrix.data[:] = 1.0  # repeated (basket, item) entries were summed
    return matrix


def cooccurrence_neighbours(
    baskets: sparse.csr_matrix,
    k: int = DEFAULT_K,
    measure: str = "cosine",
    *,
    min_support: int = 1,
    min_lift: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
    block_products: int = BLOCK_PRODUCTS,
) -> NeighbourTable:
    """Each item's ``k`` best co-occurring items by ``measure`` over binary ``baskets``.

    With ``c`` the baskets holding both items, ``n`` the baskets holding one and ``N`` all:
    ``asymmetric`` = c / (n_a^alpha n_b^(1-alpha)) (Aiolli's asymmetric cosine, discounting a
    popular neighbour less than cosine does), ``cosine`` = c / sqrt(n_a n_b), ``jaccard`` =
    c / (n_a + n_b - c), ``lift`` = c N / (n_a n_b). Pairs seen together in fewer than
    ``min_support`` baskets, or with a lift below ``min_lift``, are dropped; ties go to the
    pair with more support, then to the lower item position.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, not {measure!r}")
    if k < 1:
        raise ValueError("k must be at least 1")
    if min_support < 1:
        raise ValueError("min_support must be at least 1")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be within 0..1")
    x = sparse.csr_matrix(baskets, dtype=np.float32)
    x.data[:] = 1.0
    n_baskets, n_items = x.shape
    xt = x.T.tocsr()
    counts = np.asarray(xt.sum(axis=1)).ravel().astype(np.float64)
    basket_sizes = np.diff(x.indptr).astype(np.float64)
    # Products an item's row costs: the sizes of the baskets it is in.
    cost = np.asarray(xt @ basket_sizes).ravel()
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    kept_idx: list[I32] = []
    kept_score: list[F32] = []
    start = 0
    while start < n_items:
        end = _block_end(cost, start, block_products)
        block = sparse.csr_matrix(xt[start:end] @ x)
        block.sort_indices()
        rows = np.repeat(np.arange(end - start), np.diff(block.indptr))
        cols = block.indices.astype(np.int64)
        support = block.data.astype(np.float64)
        n_a, n_b = counts[rows + start], counts[cols]
        if measure == "asymmetric":
            score = support / (n_a**alpha * n_b ** (1.0 - alpha))
        elif measure == "cosine":
            score = support / np.sqrt(n_a * n_b)
        elif measure == "jaccard":
            score = support / (n_a + n_b - support)
        else:
            score = support * n_baskets / (n_a * n_b)
        drop = (rows + start == cols) | (support < min_support)
        if min_lift > 0:
            drop |= support * n_baskets / (n_a * n_b) < min_lift
        keep = ~drop
        rows, cols, score, support = rows[keep], cols[keep], score[keep], support[keep]
        # Ties go to the pair seen together more often (support breaks them below 1e-6), then
        # to the lower item (the sort is stable and each row's columns are sorted).
        score = score + support * 1e-9
        top = float(score.max()) if score.size else 1.0
        # One stable sort for the whole block: by row, then by score, best first.
        order = np.argsort(rows * 2.0 + (1.0 - score / (top * (1.0 + 1e-9))), kind="stable")
        rows, cols, score = rows[order], cols[order], score[order]
        per_row = np.bincount(rows, minlength=end - start)
        first = np.concatenate([[0], np.cumsum(per_row)[:-1]])
        rank = np.arange(rows.size) - np.repeat(first, per_row)
        best = rank < k
        kept_idx.append(cols[best].astype(np.int32))
        kept_score.append(score[best].astype(np.float32))
        indptr[start + 1 : end + 1] = np.minimum(per_row, k)
        start = end
    np.cumsum(indptr, out=indptr)
    return NeighbourTable(
        indptr=indptr,
        indices=np.concatenate(kept_idx) if kept_idx else np.zeros(0, dtype=np.int32),
        scores=np.concatenate(kept_score) if kept_score else np.zeros(0, dtype=np.float32),
    )


def _block_end(cost: npt.NDArray[np.float64], start: int, budget: int) -> int:
    """End of the block of items from ``start`` whose products fit ``budget``."""
    spent = np.cumsum(cost[start:])
    fits = int(np.searchsorted(spent, budget, side="right"))
    return start + max(1, fits)


def sessions(user: npt.ArrayLike, time: npt.ArrayLike, window_seconds: float) -> tuple[I64, int]:
    """A session number per event (events given in any order) and the number of sessions.

    A user's events belong to one session while each follows the previous within
    ``window_seconds``; a longer gap starts a new one.
    """
    users = np.asarray(user, dtype=np.int64)
    times = np.asarray(time, dtype=np.float64)
    if users.size == 0:
        return np.zeros(0, dtype=np.int64), 0
    order = np.lexsort((times, users))
    u, t = users[order], times[order]
    starts = np.ones(u.size, dtype=np.bool_)
    starts[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > window_seconds)
    numbers = np.cumsum(starts) - 1
    out = np.empty(u.size, dtype=np.int64)
    out[order] = numbers
    return out, int(numbers[-1]) + 1


def title_words(title: str) -> list[str]:
    """Lower-case, accent-free words of a title, without stop words and one-letter words."""
    folded = title.casefold()
    if not folded.isascii():  # most titles need no accent folding
        folded = unicodedata.normalize("NFKD", folded)
        folded = "".join(c for c in folded if not unicodedata.combining(c))
    plain = folded
    return [w for w in _WORD.findall(plain) if len(w) > 1 and w not in STOPWORDS]


def content_terms(title: str, categories: Sequence[str], tags: Sequence[str]) -> set[str]:
    """The terms content similarity compares: categories, tags and title words."""
    terms = {f"category:{c}" for c in categories}
    terms.update(f"tag:{t.casefold()}" for t in tags)
    terms.update(f"word:{w}" for w in title_words(title))
    return terms


@dataclass(frozen=True)
class ContentIndex:
    """L2-normalised TF-IDF rows (items x terms) over categories, tags and title words."""

    terms: tuple[str, ...]
    idf: F32
    matrix: sparse.csr_matrix
    position: dict[str, int] = field(repr=False, default_factory=dict)

    @classmethod
    def build(cls, rows: Sequence[tuple[str, Sequence[str], Sequence[str]]]) -> ContentIndex:
        """From ``(title, categories, tags)`` per item, in item order."""
        per_item = [content_terms(*r) for r in rows]
        vocabulary = sorted({t for terms in per_item for t in terms})
        index = {t: i for i, t in enumerate(vocabulary)}
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        cols: list[int] = []
        for n, terms in enumerate(per_item):
            cols.extend(index[t] for t in terms)
            indptr[n + 1] = len(cols)
        indices = np.array(cols, dtype=np.int32)
        df = np.bincount(indices, minlength=len(vocabulary)).astype(np.float64)
        idf = np.log((1.0 + len(rows)) / (1.0 + df)) + 1.0
        return cls.from_parts(tuple(vocabulary), idf.astype(np.float32), indptr, indices)

    @classmethod
    def from_parts(
        cls, terms: tuple[str, ...], idf: F32, indptr: I64, indices: I32
    ) -> ContentIndex:
        """Rebuild from the stored structure (weights are recomputed from ``idf``)."""
        if idf.shape != (len(terms),) or not np.isfinite(idf).all():
            raise ValueError("content index idf does not match its terms")
        if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise ValueError("content index indptr is malformed")
        if indptr[-1] != indices.size or (
            indices.size and (indices.min() < 0 or indices.max() >= len(terms))
        ):
            raise ValueError("content index terms out of range")
        data = idf[indices].astype(np.float32)
        matrix = sparse.csr_matrix(
            (data, indices, indptr), shape=(indptr.size - 1, len(terms)), dtype=np.float32
        )
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        matrix = sparse.csr_matrix(sparse.diags(1.0 / norms) @ matrix, dtype=np.float32)
        position = {t: i for i, t in enumerate(terms)}
        return cls(terms=terms, idf=idf, matrix=matrix, position=position)

    def vector(self, title: str, categories: Sequence[str], tags: Sequence[str]) -> F32:
        """The unit TF-IDF vector of an item described by its text (terms not indexed skipped)."""
        out = np.zeros(len(self.terms), dtype=np.float32)
        for term in content_terms(title, categories, tags):
            col = self.position.get(term)
            if col is not None:
                out[col] = self.idf[col]
        norm = float(np.linalg.norm(out))
        return out / norm if norm > 0 else out

    def sparse_vector(
        self, title: str, categories: Sequence[str], tags: Sequence[str]
    ) -> tuple[I64, F32]:
        """``vector``'s non-zero terms and weights, without a vector over every term."""
        cols = sorted(
            {
                c
                for t in content_terms(title, categories, tags)
                if (c := self.position.get(t)) is not None
            }
        )
        terms = np.array(cols, dtype=np.int64)
        weights = self.idf[terms].astype(np.float32)
        norm = float(np.linalg.norm(weights))
        return terms, weights / norm if norm > 0 else weights

    def scores(self, vector: F32) -> F32:
        """Cosine of every indexed item with a unit ``vector`` (one sparse product)."""
        nonzero = np.flatnonzero(vector)
        if nonzero.size == 0:
            return np.zeros(self.matrix.shape[0], dtype=np.float32)
        picked = self.matrix[:, nonzero] @ vector[nonzero]
        return np.asarray(picked, dtype=np.float32).ravel()


def basket_scores(table: NeighbourTable, basket: Sequence[int], n_items: int) -> F32:
    """Sum over basket items of each rule's score (lift), so items that go with several of the
    basket's items rank first; 0 where no rule links an item to the basket."""
    out = np.zeros(n_items, dtype=np.float32)
    for item in basket:
        idx, score = table.row(item)
        np.add.at(out, idx, score)
    return out
