"""Similar items and frequently-together lists, ranked over the serving catalogue.

``SimilarityIndex`` aligns the neighbour artifact (artifact item order) and the active model's
item vectors with the catalogue, so every source yields a score vector over catalogue positions
and the usual masks (seen, dismissed, excluded, categories) apply. Modes:

- BEHAVIOUR: the stored co-occurrence neighbours ("users who liked this also liked"),
- CONTENT: TF-IDF cosine over categories, tags and title words (any item, even a new one),
- EMBEDDING: cosine of the LightFM item vectors,
- AUTO: a blend, each source rescaled to its best score; behaviour leads when the item has any,
  otherwise content and embedding carry it (cold start).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.neighbour_artifact import NeighbourArrays
from recgrpc.model.neighbours import basket_scores
from recgrpc.model.rerank import SAMPLE_STEP, top_candidates

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
PersonalScores = Callable[[I64], F32]
"""The user's model scores of the given catalogue positions (only a small pool is scored)."""

AUTO_WEIGHTS = {"behaviour": 0.8, "embedding": 0.15, "content": 0.05}
"""Measured on MovieLens (bench/similar_quality.py): behaviour carries the blend; the other
two mostly re-order ties and fill in for items with few co-occurrences."""
COLD_WEIGHTS = {"content": 0.6, "embedding": 0.4}
PERSONAL_SHARE = 0.15
"""How much a user's own model score re-orders the neighbour pool (light personalisation)."""
POOL_FACTOR = 4
MIN_POOL = 50


class SimilarityMode(enum.StrEnum):
    AUTO = "AUTO"
    BEHAVIOUR = "BEHAVIOUR"
    CONTENT = "CONTENT"
    EMBEDDING = "EMBEDDING"


REASONS = {
    "behaviour": "also_liked",
    "content": "similar_content",
    "embedding": "similar_embedding",
    "together": "frequently_together",
}


@dataclass(frozen=True)
class ItemText:
    """What content similarity reads about the item asked for (it may be inactive)."""

    item_id: str
    title: str
    categories: Sequence[str]
    tags: Sequence[str]


@dataclass(frozen=True)
class SourceScores:
    """Per-source score vectors over the catalogue (None when the source has nothing)."""

    scores: dict[str, F32]

    def top(self, source: str) -> float:
        vector = self.scores[source]
        return float(vector.max()) if vector.size else 0.0

    def blended(self, weights: dict[str, float]) -> tuple[F32, list[str]]:
        """Weighted sum of each source rescaled to its maximum, and the sources used."""
        used = [s for s in weights if s in self.scores]
        total: F32 | None = None
        for source in used:
            vector = self.scores[source]
            top = self.top(source)
            if top <= 0:
                continue  # adds nothing (a zero vector)
            factor = np.float32(weights[source] / top)
            if total is None:
                total = vector * factor
            else:
                total += vector * factor
        if total is None:
            if not used:
                return np.zeros(0, dtype=np.float32), []
            total = np.zeros_like(self.scores[used[0]])
        return total.astype(np.float32, copy=False), used


@dataclass(frozen=True)
class SimilarityIndex:
    """The neighbour artifact and the model's item vectors, aligned with one catalogue."""

    arrays: NeighbourArrays = field(repr=False)
    catalog_size: int
    to_catalog: I64 = field(repr=False)
    """Catalogue position of each artifact item (-1 when no longer in the catalogue)."""
    artifact_position: dict[str, int] = field(repr=False)
    embeddings: F32 | None = field(repr=False, default=None)
    """Unit-length item vectors aligned with the catalogue (rows of zeros for unknown items)."""
    postings: sparse.csr_matrix | None = field(repr=False, default=None)
    """The content index transposed (terms x catalogue positions): an item's content scores
    read only the postings of its few terms, never a column of every item."""

    @classmethod
    def build(
        cls, arrays: NeighbourArrays, catalog: CatalogIndex, item_vectors: F32 | None
    ) -> SimilarityIndex:
        """``item_vectors``: the active model's item embeddings in catalogue order, if any."""
        to_catalog = np.array(
            [catalog.position.get(i, -1) for i in arrays.item_ids], dtype=np.int64
        )
        unit = None
        if item_vectors is not None and item_vectors.shape[0] == len(catalog):
            norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            # Column-major, as ModelView keeps its items: BLAS walks it faster for one
            # matrix-vector product (bench/recommend_latency.py).
            unit = np.asfortranarray(item_vectors / norms, dtype=np.float32)
        return cls(
            arrays=arrays,
            catalog_size=len(catalog),
            to_catalog=to_catalog,
            artifact_position={item: i for i, item in enumerate(arrays.item_ids)},
            embeddings=unit,
            postings=_postings(arrays.content.matrix, to_catalog, len(catalog)),
        )

    @property
    def version(self) -> str:
        return self.arrays.version

    def _scatter(self, artifact_items: npt.ArrayLike, values: npt.ArrayLike) -> F32:
        out = np.zeros(self.catalog_size, dtype=np.float32)
        pos = self.to_catalog[np.asarray(artifact_items, dtype=np.int64)]
        keep = pos >= 0
        out[pos[keep]] = np.asarray(values, dtype=np.float32)[keep]
        return out

    def behaviour(self, item_id: str) -> F32 | None:
        row = self.artifact_position.get(item_id)
        if row is None:
            return None
        idx, score = self.arrays.behaviour.row(row)
        if idx.size == 0:
            return None
        return self._scatter(idx, score)

    def content(self, item: ItemText) -> F32 | None:
        index = self.arrays.content
        row = self.artifact_position.get(item.item_id)
        if row is not None:
            matrix = index.matrix
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            terms, weights = matrix.indices[start:end], matrix.data[start:end]
        else:
            terms, weights = index.sparse_vector(item.title, item.categories, item.tags)
        if not weights.any():
            return None
        postings = self.postings
        if postings is None:  # built by ``build``; kept optional for a hand-made index
            postings = _postings(index.matrix, self.to_catalog, self.catalog_size)
        # The items of each of the item's few terms, weighted and summed per item.
        spans = [
            (int(postings.indptr[t]), int(postings.indptr[t + 1]), float(w))
            for t, w in zip(terms.tolist(), weights.tolist(), strict=True)
        ]
        items = np.concatenate([postings.indices[a:b] for a, b, _ in spans])
        values = np.concatenate([postings.data[a:b] * np.float32(w) for a, b, w in spans])
        summed = np.bincount(items, weights=values, minlength=self.catalog_size)
        return summed.astype(np.float32)

    def embedding(self, catalog_position: int | None) -> F32 | None:
        return self.embeddings_of([catalog_position])[0]

    def embeddings_of(self, catalog_positions: Sequence[int | None]) -> list[F32 | None]:
        """Each position's cosine with every item (clipped at 0)."""
        found: list[F32 | None] = [None] * len(catalog_positions)
        if self.embeddings is None:
            return found
        wanted = [
            (n, p)
            for n, p in enumerate(catalog_positions)
            if p is not None and self.embeddings[p].any()
        ]
        if not wanted:
            return found
        for n, p in wanted:
            scores: F32 = self.embeddings @ self.embeddings[p]
            found[n] = np.maximum(scores, np.float32(0.0), out=scores)
        return found

    def sources(self, item: ItemText, catalog_position: int | None) -> SourceScores:
        return self.sources_of([(item, catalog_position)])[0]

    def sources_of(self, items: Sequence[tuple[ItemText, int | None]]) -> list[SourceScores]:
        """``sources`` of several items (a basket's)."""
        embedded = self.embeddings_of([p for _, p in items])
        out = []
        for (item, _), embedding in zip(items, embedded, strict=True):
            found: dict[str, F32] = {}
            for name, vector in (
                ("behaviour", self.behaviour(item.item_id)),
                ("content", self.content(item)),
                ("embedding", embedding),
            ):
                if vector is not None:
                    found[name] = vector
            out.append(SourceScores(found))
        return out

    def together(self, basket: Sequence[str]) -> F32 | None:
        rows = [self.artifact_position[i] for i in basket if i in self.artifact_position]
        n = len(self.arrays.item_ids)
        scores = basket_scores(self.arrays.together, rows, n)
        if not scores.any():
            return None
        nonzero = np.flatnonzero(scores)
        return self._scatter(nonzero, scores[nonzero])


@dataclass(frozen=True)
class SimilarList:
    positions: I64
    scores: F32
    reasons: list[str]
    mode: SimilarityMode
    fallback_reason: str = ""


def rank_similar(
    sources: SourceScores,
    mode: SimilarityMode,
    allowed: npt.NDArray[np.bool_],
    limit: int,
    personal: PersonalScores | None = None,
) -> SimilarList:
    """The ``limit`` best allowed items for ``mode``; an impossible mode falls back to AUTO's
    blend of what exists, and ``fallback_reason`` says so."""
    fallback = ""
    wanted = mode.value.lower()
    if mode != SimilarityMode.AUTO and wanted not in sources.scores:
        fallback = f"{wanted} requested, but {NO_SOURCE[wanted]}: blend of the other sources"
        mode = SimilarityMode.AUTO
    if mode == SimilarityMode.AUTO:
        weights = AUTO_WEIGHTS if "behaviour" in sources.scores else COLD_WEIGHTS
        if "behaviour" not in sources.scores and not fallback:
            fallback = NO_SOURCE["behaviour"] + ": content and embedding neighbours"
    else:
        weights = {wanted: 1.0}
    scores, used = sources.blended(weights)
    if not used:
        return SimilarList(
            np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), [], mode,
            "no neighbours: the item has no behaviour, known content or model vector",
        )  # fmt: skip
    pool = top_positions(scores, allowed, max(MIN_POOL, POOL_FACTOR * limit), positive=True)
    final = scores[pool]
    if personal is not None and pool.size:
        mine = personal(pool)
        span = float(mine.max() - mine.min())
        if span > 0:
            top = float(final.max()) or 1.0
            final = (1 - PERSONAL_SHARE) * final + PERSONAL_SHARE * top * (mine - mine.min()) / span
    order = np.argsort(-final, kind="stable")[:limit]
    chosen = pool[order]
    reasons = _main_sources(sources, weights, used, chosen)
    return SimilarList(chosen, final[order].astype(np.float32), reasons, mode, fallback)


NO_SOURCE = {
    "behaviour": "no behaviour neighbours for this item yet",
    "content": "the item has no categories, tags or title words in the index",
    "embedding": "the model has no vector for this item",
}


def _main_sources(
    sources: SourceScores, weights: dict[str, float], used: list[str], positions: I64
) -> list[str]:
    """Per position, the reason of the source contributing most to its blended score (the
    first of ``used`` on a tie)."""
    if positions.size == 0:
        return []
    parts = np.empty((len(used), positions.size), dtype=np.float64)
    for n, source in enumerate(used):
        top = sources.top(source) or 1.0
        parts[n] = weights[source] * sources.scores[source][positions].astype(np.float64) / top
    return [REASONS[used[n]] for n in parts.argmax(axis=0).tolist()]


def _postings(matrix: sparse.csr_matrix, to_catalog: I64, catalog_size: int) -> sparse.csr_matrix:
    """Terms x catalogue positions of ``matrix`` (artifact items x terms); items no longer in
    the catalogue are left out."""
    coo = matrix.tocoo()
    position = to_catalog[coo.row]
    keep = position >= 0
    return sparse.csr_matrix(
        (coo.data[keep], (coo.col[keep], position[keep])),
        shape=(matrix.shape[1], catalog_size),
        dtype=np.float32,
    )


def top_positions(
    scores: F32, allowed: npt.NDArray[np.bool_], k: int, *, positive: bool = False
) -> I64:
    """Positions of the ``k`` best allowed (finite; with ``positive``, above 0) scores, best
    first, equal scores in position order (as a stable sort of all of them would give).

    Only a few candidates are partitioned: those above a sampled threshold
    (``rerank.top_candidates``). When ``allowed`` refuses few items (a user's seen and
    dismissed ones), the best ``k`` plus that many are taken from ``scores`` as they are and
    the refused ones dropped, so no masked copy of the catalogue is made.
    """
    if k <= 0 or scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    refused = allowed.size - int(np.count_nonzero(allowed))
    if scores.size > 16 * SAMPLE_STEP * (k + refused):
        candidates = top_candidates(scores, k + refused)
    else:
        candidates = top_candidates(np.where(allowed, scores, np.float32(-np.inf)), k)
    keep = allowed[candidates]
    if positive:
        keep &= scores[candidates] > 0
    candidates = candidates[keep]
    values = scores[candidates]
    if candidates.size > k:
        kth = values[np.argpartition(values, values.size - k)[values.size - k]]
        above = np.flatnonzero(values > kth)
        tied = np.flatnonzero(values == kth)[: k - above.size]
        chosen = np.sort(np.concatenate([above, tied]))
        candidates, values = candidates[chosen], values[chosen]
    return candidates[np.argsort(-values, kind="stable")].astype(np.int64)
