"""Item search: a BM25 index (bm25s) over titles, categories and tags, with synonyms.

Text is normalised the same way for items and queries: Unicode compatibility forms, accents
dropped, case folded, split into words, and each word reduced to its Snowball (Porter 2) stem
so plurals and simple inflections meet ("Earbuds" and "earbud", "café" and "cafe"). A synonyms
file holds one group per line (``earbuds, earphones, in-ear headphones``); a query that
contains any phrase of a group is expanded with the other phrases of that group.

Pure: no I/O beyond parsing the synonym text it is given; the server reads the file.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import bm25s
import numpy as np
import numpy.typing as npt
import Stemmer

MAX_QUERY_LENGTH = 255
"""Characters in a query once trimmed."""
CATEGORY_REPEAT = 2
"""Categories are short and chosen by the catalogue: they count like two title words."""
SYNONYM_WEIGHT = 0.5
"""A synonym's match counts half of a match of what the user typed."""

_WORD = re.compile(r"\w+")
_stem = Stemmer.Stemmer("english").stemWord


@lru_cache(maxsize=1 << 18)
def _token(word: str) -> str:
    """One word's search token; cached, since a catalogue repeats a small vocabulary."""
    decomposed = unicodedata.normalize("NFKD", word)
    return str(_stem("".join(c for c in decomposed if not unicodedata.combining(c)).casefold()))


def normalise(text: str) -> list[str]:
    """Search tokens of ``text``: accent-free, case-folded word stems, in order."""
    return [t for t in map(_token, _WORD.findall(text)) if t]


@dataclass(frozen=True)
class Synonyms:
    """Groups of equivalent phrases, each phrase kept as its normalised token tuple."""

    groups: tuple[tuple[tuple[str, ...], ...], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Synonyms:
        """One group per line, phrases separated by commas; ``#`` starts a comment."""
        groups = []
        for line in text.splitlines():
            listed = line.split("#", 1)[0].split(",")
            phrases = tuple(dict.fromkeys(tuple(normalise(p)) for p in listed if normalise(p)))
            if len(phrases) > 1:
                groups.append(phrases)
        return cls(tuple(groups))

    def expand(self, tokens: Sequence[str]) -> list[tuple[str, ...]]:
        """Phrases sharing a group with a phrase found in ``tokens`` (and not in them)."""
        added: list[tuple[str, ...]] = []
        for group in self.groups:
            if any(_contains(tokens, phrase) for phrase in group):
                added.extend(p for p in group if not _contains(tokens, p) and p not in added)
        return added


def _contains(tokens: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return any(tuple(tokens[i : i + n]) == tuple(phrase) for i in range(len(tokens) - n + 1))


def document_tokens(title: str, categories: Sequence[str], tags: Sequence[str]) -> list[str]:
    """What an item is searched by: its title, categories (weighted up) and tags."""
    tokens = normalise(title)
    for category in categories:
        tokens.extend(normalise(category) * CATEGORY_REPEAT)
    for tag in tags:
        tokens.extend(normalise(tag))
    return tokens


@dataclass(frozen=True)
class SearchIndex:
    """BM25 over a fixed list of items; ``scores`` ranks every item for one query."""

    item_ids: tuple[str, ...]
    titles: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    synonyms: Synonyms
    retriever: bm25s.BM25 | None = field(repr=False)
    by_category: dict[str, npt.NDArray[np.int64]] = field(repr=False)
    position: dict[str, int] = field(repr=False)

    @classmethod
    def build(
        cls,
        rows: Iterable[tuple[str, str, Sequence[str], Sequence[str]]],
        synonyms: Synonyms = Synonyms(),
    ) -> SearchIndex:
        """From ``(item_id, title, categories, tags)`` rows of the active catalogue."""
        ids: list[str] = []
        titles: list[str] = []
        cats: list[tuple[str, ...]] = []
        corpus: list[list[str]] = []
        members: dict[str, list[int]] = {}
        for item_id, title, categories, tags in rows:
            position = len(ids)
            ids.append(item_id)
            titles.append(title)
            distinct = tuple(dict.fromkeys(categories))
            cats.append(distinct)
            for category in distinct:
                members.setdefault(category, []).append(position)
            corpus.append(document_tokens(title, distinct, tags))
        retriever = None
        if any(corpus):  # BM25's average length must not be 0 (it divides by it)
            retriever = bm25s.BM25()
            retriever.index(corpus, show_progress=False)
        return cls(
            item_ids=tuple(ids),
            titles=tuple(titles),
            categories=tuple(cats),
            synonyms=synonyms,
            retriever=retriever,
            by_category={c: np.array(ix, dtype=np.int64) for c, ix in members.items()},
            position={item_id: i for i, item_id in enumerate(ids)},
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """BM25 relevance of every item to ``query`` (0 where nothing matches).

        The words typed score as one BM25 query; each synonym phrase they bring in adds
        ``SYNONYM_WEIGHT`` times its score, where a phrase of several words scores as its
        weakest word (all of "in-ear headphones", not any headphones).
        """
        tokens = normalise(query)
        total = np.zeros(len(self.item_ids), dtype=np.float32)
        if self.retriever is None or not tokens:
            return total
        total += self._bm25(tokens)
        for phrase in self.synonyms.expand(tokens):
            words = np.stack([self._bm25([word]) for word in phrase])
            total += SYNONYM_WEIGHT * words.min(axis=0)
        return total

    def _bm25(self, tokens: list[str]) -> npt.NDArray[np.float32]:
        assert self.retriever is not None
        return np.asarray(self.retriever.get_scores(tokens), dtype=np.float32)

    def indices(self, item_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Positions of those of ``item_ids`` in the index."""
        pos = self.position
        return np.array([pos[i] for i in item_ids if i in pos], dtype=np.int64)

    def category_mask(self, categories: Iterable[str]) -> npt.NDArray[np.bool_]:
        mask = np.zeros(len(self.item_ids), dtype=np.bool_)
        for category in categories:
            members = self.by_category.get(category)
            if members is not None:
                mask[members] = True
        return mask


def best_matches(
    scores: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_], k: int
) -> npt.NDArray[np.int64]:
    """Positions of the ``k`` best positive allowed scores, best first (ties by position)."""
    candidates = np.flatnonzero(allowed & (scores > 0))
    if candidates.size > k:
        part = np.argpartition(-scores[candidates], k - 1)[:k]
        candidates = np.sort(candidates[part])
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order].astype(np.int64)


def blend(
    relevance: npt.NDArray[np.float32], personal: npt.NDArray[np.float32], weight: float
) -> npt.NDArray[np.float32]:
    """Re-rank matches for a user: ``(1 - weight) * relevance + weight * personal``, each
    scaled to 0..1 over the matches so neither scale dominates by its units."""

    def unit(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        low, high = float(values.min()), float(values.max())
        if high - low <= 1e-12:
            return np.ones_like(values)
        return ((values - low) / (high - low)).astype(np.float32)

    if relevance.size == 0:
        return relevance
    mixed = (1.0 - weight) * unit(relevance) + weight * unit(personal)
    return mixed.astype(np.float32)
