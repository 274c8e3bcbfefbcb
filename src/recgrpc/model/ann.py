"""Approximate maximum-inner-product search over item vectors, for large catalogues.

An inverted-file index (faiss IVF-Flat, inner product) over an item matrix (the hybrid or the
content vectors ``[bias | embedding]``) finds the candidates and their inner products with the
user's vector (exact, to float32 rounding); ranking applies every filter exactly (seen,
dismissed, excluded, unscored), widening the search when too few survive. The items are
extended by one coordinate so that all have the same norm (the query by a 0, so inner products
are unchanged): the coarse quantiser's clusters then group items by direction, which is what
an inner-product search needs. The settings are measured in bench/ann_index.py (HNSW graphs,
tried first, needed a far longer build for the same recall).

faiss is imported only when an index is built (a catalogue of ``ann_min_items`` or more), and
its loader's informational log lines are silenced: the server's start is quiet otherwise.
"""

from __future__ import annotations

import logging
import math
import time
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

LISTS_PER_SQRT = 2
"""Inverted lists: this many times the square root of the catalogue size."""
PROBE_SHARE = 1 / 16
"""Share of the lists a search visits."""
MIN_PROBES = 32
"""Lists a search visits at least (a smaller catalogue's lists are short)."""
TRAIN_PER_LIST = 64
"""Training sample for the coarse quantiser: this many items per list (at most all)."""
EXHAUSTIVE_SHARE = 0.25
"""A search for at least this share of the index scores every item exactly instead: probing
would visit about as many and could still miss some."""
SEED = 1234
"""The coarse quantiser's k-means seed: the same model and catalogue give the same index."""

F32 = npt.NDArray[np.float32]


def _faiss() -> ModuleType:
    """faiss, imported on first use with its loader's INFO lines (which instruction set it
    loaded, and the optional builds it could not find) kept out of the server's log."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("faiss").setLevel(logging.WARNING)
    import faiss  # noqa: PLC0415 - only large catalogues need it

    return faiss


def augmented_items(items: F32) -> F32:
    """Rows ``[x, sqrt(M^2 - |x|^2)]`` with M the largest norm: all of norm M, so for a query
    ``[q, 0]`` the inner product is still ``q . x`` while the quantiser's clusters, built on
    rows of one norm, follow direction (without it a few long vectors dominate every list)."""
    items = np.ascontiguousarray(items, dtype=np.float32)
    norms = np.einsum("ij,ij->i", items, items)
    extra = np.sqrt(np.maximum(norms.max(initial=0.0) - norms, 0.0)).astype(np.float32)
    return np.hstack([items, extra[:, None]])


class ItemIndex:
    """An IVF index over the rows of ``items`` for maximum inner product; results are
    catalogue positions. Thread-safe for searches (built once, never modified; each search
    passes its own parameters)."""

    def __init__(self, items: F32, *, threads: int = 0, probe_share: float = PROBE_SHARE) -> None:
        started = time.perf_counter()
        self.size = int(items.shape[0])
        self._items = items
        self.lists = max(1, min(self.size, round(LISTS_PER_SQRT * math.sqrt(self.size))))
        self.probes = min(self.lists, max(MIN_PROBES, math.ceil(probe_share * self.lists)))
        self._index: Any = None
        self._faiss: Any = None
        self._quantiser: Any = None
        if self.size:
            faiss = self._faiss = _faiss()
            if threads > 0:
                faiss.omp_set_num_threads(threads)
            rows = augmented_items(items)
            dims = int(rows.shape[1])
            quantiser = faiss.IndexFlatIP(dims)
            index = faiss.IndexIVFFlat(quantiser, dims, self.lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = SEED
            index.cp.min_points_per_centroid = 1  # else faiss warns on stderr for small sets
            sample = min(self.size, TRAIN_PER_LIST * self.lists)
            rng = np.random.default_rng(SEED)
            picked = np.sort(rng.choice(self.size, sample, replace=False))
            index.train(rows[picked])
            index.add(rows)
            self._index, self._quantiser = index, quantiser  # the index does not own it
        self.build_seconds = time.perf_counter() - started

    @property
    def items(self) -> F32:
        """The matrix the index was built over (held, not copied)."""
        return self._items

    @property
    def memory_bytes(self) -> int:
        """The stored vectors and ids (the lists) and the quantiser's centroids."""
        if self._index is None:
            return 0
        dims = int(self._index.d)
        return self.size * (dims * 4 + 8) + self.lists * dims * 4

    def search(self, vector: F32, count: int) -> tuple[npt.NDArray[np.int64], F32]:
        """Up to ``count`` positions with about the largest inner products with ``vector``
        (fewer only if the probed lists hold fewer), best first, and those inner products
        (computed by the index: equal to a matrix product's to float32 rounding)."""
        count = min(count, self.size)
        if count <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if count >= EXHAUSTIVE_SHARE * self.size:
            scores = self._items @ vector.astype(np.float32)
            top = np.argpartition(-scores, count - 1)[:count]
            top = top[np.lexsort((top, -scores[top]))].astype(np.int64)  # ties: position
            return top, scores[top]
        query = np.zeros((1, self._index.d), dtype=np.float32)
        query[0, :-1] = vector
        # A wide search (filters removed many) visits enough lists to hold about twice what
        # it asks for.
        wide = math.ceil(2 * count * self.lists / self.size)
        params = self._faiss.SearchParametersIVF(nprobe=min(self.lists, max(self.probes, wide)))
        found_scores, found = self._index.search(query, count, params=params)
        positions: npt.NDArray[np.int64] = found[0]
        kept = positions >= 0
        return positions[kept], found_scores[0][kept]
