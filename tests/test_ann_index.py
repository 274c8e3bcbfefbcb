"""The approximate index (model.ann) on its own: what it finds on clustered vectors, its exact
scan for wide searches, the norm-equalising transform, and a quiet import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import numpy.typing as npt

from recgrpc.model.ann import EXHAUSTIVE_SHARE, ItemIndex, augmented_items

F32 = npt.NDArray[np.float32]


def clustered(n: int, dims: int, seed: int) -> tuple[F32, F32]:
    """Items around 40 directions with spread norms, and queries near those directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dims)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    items = centres[rng.integers(0, 40, n)] + rng.normal(0, 0.2, (n, dims)).astype(np.float32)
    items *= rng.lognormal(0.0, 0.2, (n, 1)).astype(np.float32)
    queries = centres[rng.integers(0, 40, 50)] + rng.normal(0, 0.2, (50, dims)).astype(np.float32)
    return items.astype(np.float32), queries.astype(np.float32)


def top(items: F32, query: F32, k: int) -> list[int]:
    return np.argsort(-(items @ query), kind="stable")[:k].tolist()


def test_the_index_finds_the_true_top_10_of_clustered_items() -> None:
    items, queries = clustered(20_000, 16, seed=1)
    index = ItemIndex(items)
    assert index.size == 20_000
    assert index.lists == round(2 * np.sqrt(20_000))
    recall = []
    for query in queries:
        found, scores = index.search(query, 200)
        assert found.size == 200
        assert np.unique(found).size == 200
        # Best first, with the inner products a matrix product gives (to float32 rounding).
        assert np.all(np.diff(scores) <= 0)
        np.testing.assert_allclose(scores, items[found] @ query, rtol=1e-5, atol=1e-5)
        # What ranking keeps: the exact best 10 of the candidates.
        best = found[np.argsort(-(items[found] @ query))[:10]]
        recall.append(len(set(best.tolist()) & set(top(items, query, 10))) / 10)
    assert np.mean(recall) >= 0.95


def test_a_search_for_a_quarter_of_the_items_is_exact() -> None:
    items, queries = clustered(4_000, 8, seed=2)
    index = ItemIndex(items)
    count = int(EXHAUSTIVE_SHARE * 4_000)
    for query in queries[:5]:
        found, scores = index.search(query, count)
        assert found.tolist() == top(items, query, count)
        np.testing.assert_array_equal(scores, (items @ query)[found])
    # More than the catalogue: all of it, best first.
    assert index.search(queries[0], 10_000)[0].tolist() == top(items, queries[0], 4_000)


def test_a_wide_search_visits_enough_lists_for_what_it_asks() -> None:
    items, queries = clustered(8_000, 8, seed=4)
    index = ItemIndex(items)
    assert index.probes * 8_000 / index.lists < 1_900  # the usual probes hold fewer
    for query in queries[:5]:
        found, _ = index.search(query, 1_900)  # under a quarter: not an exact scan
        assert found.size == 1_900
        assert np.unique(found).size == 1_900


def test_small_and_empty_catalogues() -> None:
    empty = ItemIndex(np.zeros((0, 4), dtype=np.float32))
    assert empty.search(np.ones(4, np.float32), 5)[0].size == 0
    one = ItemIndex(np.ones((1, 4), dtype=np.float32))
    assert one.search(np.ones(4, dtype=np.float32), 5)[0].tolist() == [0]
    assert one.search(np.ones(4, dtype=np.float32), 0)[0].size == 0


def test_the_transform_keeps_inner_products_and_equalises_norms() -> None:
    rng = np.random.default_rng(3)
    items = rng.normal(size=(500, 6)).astype(np.float32) * rng.uniform(0.1, 3, (500, 1))
    rows = augmented_items(items.astype(np.float32))
    norms = np.linalg.norm(rows, axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-5)
    query = rng.normal(size=6).astype(np.float32)
    np.testing.assert_allclose(rows @ np.append(query, 0), items @ query, rtol=1e-5, atol=1e-5)


def test_building_an_index_writes_nothing_to_stderr() -> None:
    """faiss's loader logs which instruction set it loaded (and the builds it could not find)
    at INFO: the server's log would otherwise show it at every large model load."""
    script = (
        "import logging, numpy as np\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "from recgrpc.model.ann import ItemIndex\n"
        "ItemIndex(np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stderr == ""


def test_the_server_imports_faiss_only_to_build_an_index() -> None:
    script = "import sys, recgrpc.server, recgrpc.model.ranking\nprint('faiss' in sys.modules)\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"
