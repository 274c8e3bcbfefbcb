"""Approximate maximum-inner-product search over item vectors, for large catalogues.

An HNSW graph (usearch) over the hybrid item matrix ``[bias | embedding]``
finds the candidates; ranking then re-scores them exactly and applies every filter exactly
(seen, dismissed, excluded, unscored), widening the search when too few survive. The choice of
library and its settings are measured in bench/ann_compare.py.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from usearch.index import Index

CONNECTIVITY = 16
"""Graph degree (HNSW's M)."""
EXPANSION_ADD = 128
"""Candidate list while building (efConstruction)."""
EXPANSION_SEARCH = 512
"""Candidate list while searching (efSearch); a search for more results widens it."""
EXHAUSTIVE_SHARE = 0.25
"""A search for at least this share of the index scans it exactly: the graph walk would visit
about as many nodes and can still miss some (a multi-threaded build is not deterministic)."""


def augmented_items(items: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows ``[x, sqrt(M^2 - |x|^2)]`` with M the largest norm: all of norm M, so for a query
    ``[q, 0]`` the cosine order is the inner-product order of ``q . x``. HNSW's graph is built
    for a metric; searched with raw inner products (where an item is not its own nearest
    neighbour) it found a third of the true top 10 on LightFM-shaped vectors."""
    norms = np.einsum("ij,ij->i", items, items)
    extra = np.sqrt(np.maximum(norms.max(initial=0.0) - norms, 0.0)).astype(np.float32)
    return np.hstack([items.astype(np.float32), extra[:, None]])


class ItemIndex:
    """An HNSW index over the rows of ``items`` for maximum inner product; keys are catalogue
    positions. Thread-safe for searches (built once, never modified)."""

    def __init__(self, items: npt.NDArray[np.float32], *, threads: int = 0) -> None:
        self.size = int(items.shape[0])
        self._index = Index(
            ndim=int(items.shape[1]) + 1,
            metric="cos",
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        if self.size:
            self._index.add(
                np.arange(self.size, dtype=np.uint64),
                augmented_items(items),
                threads=threads,
            )

    @property
    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def search(self, vector: npt.NDArray[np.float32], count: int) -> npt.NDArray[np.int64]:
        """Up to ``count`` positions with about the largest inner products with ``vector``."""
        count = min(count, self.size)
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        query = np.append(vector.astype(np.float32), np.float32(0.0))
        exact = count >= EXHAUSTIVE_SHARE * self.size
        found = self._index.search(query, count, threads=1, exact=exact)
        return np.asarray(found.keys, dtype=np.int64)
