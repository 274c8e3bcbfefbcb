"""Item neighbours on tiny hand-made data: co-occurrence measures, sessions, association rules,
content similarity, the npz artifact and the similar-items ranking."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from recgrpc.model import neighbour_artifact
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.neighbour_artifact import NeighbourParams, build_neighbours
from recgrpc.model.neighbours import (
    ContentIndex,
    baskets_matrix,
    cooccurrence_neighbours,
    sessions,
    title_words,
)
from recgrpc.model.similar import ItemText, SimilarityIndex, SimilarityMode, rank_similar

# Baskets (users): 0 and 1 go together twice, 0 and 2 once; 3 is alone; 4 is in every basket.
BASKETS = [[0, 1, 4], [0, 1, 4], [0, 2, 4], [3, 4], [1, 4]]


def _matrix(baskets: list[list[int]], n_items: int = 5):  # type: ignore[no-untyped-def]
    rows = [b for b, items in enumerate(baskets) for _ in items]
    cols = [i for items in baskets for i in items]
    return baskets_matrix(rows, cols, len(baskets), n_items)


@pytest.mark.parametrize("measure", ["asymmetric", "cosine", "jaccard"])
def test_neighbours_rank_by_cooccurrence_and_never_list_the_item_itself(measure: str) -> None:
    table = cooccurrence_neighbours(_matrix(BASKETS), k=10, measure=measure)
    idx, scores = table.row(0)
    assert 0 not in idx.tolist()
    assert idx.tolist().index(1) < idx.tolist().index(2)
    assert np.all(np.diff(scores) <= 0)
    assert table.row(3)[0].tolist() == [4]


def test_lift_discounts_the_item_in_every_basket() -> None:
    table = cooccurrence_neighbours(_matrix(BASKETS), k=10, measure="lift")
    idx, _ = table.row(0)
    # Item 4 co-occurs with 0 in all of 0's baskets, but it is in every basket: lift 1, last.
    assert idx.tolist()[-1] == 4
    assert idx.tolist()[0] in (1, 2)


def test_k_min_support_and_blocks() -> None:
    whole = cooccurrence_neighbours(_matrix(BASKETS), k=2, measure="cosine")
    assert whole.counts().max() == 2
    tiny_blocks = cooccurrence_neighbours(_matrix(BASKETS), k=2, measure="cosine", block_products=1)
    assert tiny_blocks.indices.tolist() == whole.indices.tolist()
    assert np.allclose(tiny_blocks.scores, whole.scores)
    supported = cooccurrence_neighbours(_matrix(BASKETS), k=10, measure="lift", min_support=2)
    assert 2 not in supported.row(0)[0].tolist()  # 0 and 2 share one basket only
    assert 1 in supported.row(0)[0].tolist()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="measure"):
        cooccurrence_neighbours(_matrix(BASKETS), measure="euclid")
    with pytest.raises(ValueError, match="k must"):
        cooccurrence_neighbours(_matrix(BASKETS), k=0)


def test_sessions_split_where_the_gap_exceeds_the_window() -> None:
    users = [1, 1, 1, 2, 1]
    times = [0.0, 1800.0, 3600.0, 100.0, 9000.0]
    number, count = sessions(users, times, 3600.0)
    assert count == 3
    assert number[0] == number[1] == number[2] != number[4]
    assert number[3] not in (number[0], number[4])


def test_title_words_fold_case_and_accents() -> None:
    assert title_words("Les Misérables (1995) and THE Return") == [
        "les", "miserables", "1995", "return",
    ]  # fmt: skip


def test_content_index_prefers_shared_rare_terms() -> None:
    texts = [
        ("Space Jazz Odyssey", ["music"], ["jazz"]),
        ("Jazz Nights", ["music"], ["jazz"]),
        ("Rock Anthems", ["music"], ["rock"]),
        ("Cooking Basics", ["food"], []),
    ]
    index = ContentIndex.build(texts)
    scores = index.scores(index.vector("Late Jazz", ["music"], []))
    assert scores.argmax() in (0, 1)
    assert scores[3] == 0.0
    assert scores[1] > scores[2]


def _catalog(ids: list[str]) -> CatalogIndex:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    return CatalogIndex.build([(i, ["c"], [], when) for i in ids])


def _arrays() -> neighbour_artifact.NeighbourArrays:
    ids = [f"i{n}" for n in range(5)]
    users = [b for b, items in enumerate(BASKETS) for _ in items]
    items = [i for items in BASKETS for i in items]
    times = [float(b * 10_000) for b in users]  # one session per basket
    texts = [(f"title {n}", ["c"], ["t"] if n < 2 else []) for n in range(5)]
    return build_neighbours(
        "v1",
        item_ids=ids,
        positives=(users, items),
        events=(users, items, times),
        texts=texts,
        params=NeighbourParams(k=10),
    )


def test_artifact_round_trips_and_refuses_damage() -> None:
    arrays = _arrays()
    back = neighbour_artifact.decode(neighbour_artifact.encode(arrays))
    assert back.item_ids == arrays.item_ids
    assert back.behaviour.indices.tolist() == arrays.behaviour.indices.tolist()
    assert back.together.indices.tolist() == arrays.together.indices.tolist()
    assert back.params["measure"] == "asymmetric"
    with pytest.raises(ValueError, match="npz"):
        neighbour_artifact.decode(b"not an archive")


def test_similar_ranking_masks_and_falls_back_for_cold_items() -> None:
    arrays = _arrays()
    catalog = _catalog([f"i{n}" for n in range(4)] + ["new"])  # i4 inactive, "new" untrained
    index = SimilarityIndex.build(arrays, catalog, None)
    allowed = np.ones(len(catalog), dtype=np.bool_)
    allowed[catalog.position["i0"]] = False  # the item itself
    listed = rank_similar(
        index.sources(ItemText("i0", "title 0", ["c"], ["t"]), 0),
        SimilarityMode.BEHAVIOUR, allowed, 10,
    )  # fmt: skip
    ids = [catalog.item_ids[p] for p in listed.positions.tolist()]
    assert ids[0] == "i1"
    assert "i0" not in ids
    assert "i4" not in ids
    assert set(listed.reasons) == {"also_liked"}
    cold = rank_similar(
        index.sources(ItemText("new", "title new", ["c"], ["t"]), catalog.position["new"]),
        SimilarityMode.BEHAVIOUR, allowed, 3,
    )  # fmt: skip
    assert cold.mode == SimilarityMode.AUTO
    assert "behaviour requested" in cold.fallback_reason
    assert cold.reasons
    assert set(cold.reasons) == {"similar_content"}
