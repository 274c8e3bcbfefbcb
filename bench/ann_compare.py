"""ANN libraries compared for maximum-inner-product search over LightFM item vectors.

    pip install usearch==2.26.6 hnswlib==0.8.0   # faiss-cpu is the server's own dependency
    python bench/ann_compare.py [--items 1000000] [--queries 300] [--libraries usearch,faiss]
                                [--ef 256 512]

faiss-cpu (IndexHNSWFlat), usearch and hnswlib (HNSW) at the same graph degree, each built over
the hybrid item matrix ``[bias | embedding]`` that serving scores with (the catalogue of
bench/recommend_latency.py, a random model), transformed so that a metric search is an
inner-product search (``model.ann.augmented_items``). Prints build time, index memory
(resident-set growth while building), recall@10 against exact scoring of the index's first 10
and of what serving keeps (the exact top 10 of 200 re-scored candidates), and query latency for
200 candidates (one thread, like a request). HNSW graphs were the first choice; the server now
uses faiss's inverted-file index instead (bench/ann_index.py: the same recall with a build of
seconds, not minutes, at 1M items). Benchmarks print numbers; they are not tests.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from recommend_latency import build_engine

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.ann import augmented_items

M, EF_CONSTRUCTION = 16, 128
F32 = npt.NDArray[np.float32]
Search = Callable[[F32, int], npt.NDArray[np.int64]]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_faiss(items: F32, threads: int) -> tuple[Search, Callable[[int], None]]:
    import faiss  # noqa: PLC0415 - installed for this bench only

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(items.shape[1], M, faiss.METRIC_L2)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(np.ascontiguousarray(items))
    faiss.omp_set_num_threads(1)

    def search(q: F32, k: int) -> npt.NDArray[np.int64]:
        return index.search(q[None, :], k)[1][0].astype(np.int64)

    def set_ef(ef: int) -> None:
        index.hnsw.efSearch = ef

    return search, set_ef


def build_usearch(items: F32, threads: int) -> tuple[Search, Callable[[int], None]]:
    from usearch.index import Index  # noqa: PLC0415 - like the other two

    index = Index(
        ndim=items.shape[1], metric="cos", dtype="f32", connectivity=M,
        expansion_add=EF_CONSTRUCTION,
    )  # fmt: skip
    index.add(np.arange(items.shape[0]), np.ascontiguousarray(items), threads=threads)

    def search(q: F32, k: int) -> npt.NDArray[np.int64]:
        return index.search(q, k, threads=1).keys.astype(np.int64)

    def set_ef(ef: int) -> None:
        index.expansion_search = ef

    return search, set_ef


def build_hnswlib(items: F32, threads: int) -> tuple[Search, Callable[[int], None]]:
    import hnswlib  # noqa: PLC0415 - installed for this bench only

    index = hnswlib.Index(space="cosine", dim=items.shape[1])
    index.init_index(max_elements=items.shape[0], M=M, ef_construction=EF_CONSTRUCTION)
    index.add_items(np.ascontiguousarray(items), num_threads=threads)
    index.set_num_threads(1)

    def search(q: F32, k: int) -> npt.NDArray[np.int64]:
        return index.knn_query(q, k)[0][0].astype(np.int64)

    return search, index.set_ef


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="threads for building")
    parser.add_argument("--libraries", default="usearch,faiss,hnswlib")
    parser.add_argument("--ef", type=int, nargs="+", default=[256, 512], help="efSearch values")
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")
    engine = build_engine(args.items, 1000, args.components)
    snap = engine.snapshot
    assert snap.model is not None
    raw_items = np.ascontiguousarray(snap.model.hybrid)
    # Every library indexes the same MIPS-to-metric transform the server uses (model.ann).
    items = augmented_items(raw_items)
    rng = np.random.default_rng(5)
    queries = []
    for u in rng.integers(0, 1000, args.queries):
        ctx = domain.UserContext(f"user{u}", True, preferences={"c3": 1.0})
        vector = snap.model.user_vector(Algorithm.HYBRID, ctx, snap.catalog.position, {})
        assert vector is not None
        queries.append(np.append(vector.astype(np.float32), np.float32(0.0)))
    exact = [np.argsort(-(items @ q))[:50] for q in queries]
    builders = {"faiss": build_faiss, "usearch": build_usearch, "hnswlib": build_hnswlib}
    print(f"{args.items} items x {items.shape[1]} dims; M={M} efConstruction={EF_CONSTRUCTION}")
    print(f"{'library':>8} {'build s':>8} {'mem MB':>8} {'ef':>5} {'rec@10':>7} {'served':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7}")  # fmt: skip
    for name in args.libraries.split(","):
        gc.collect()
        before = rss_mb()
        start = time.perf_counter()
        search, set_ef = builders[name](items, args.threads)
        build = time.perf_counter() - start
        memory = rss_mb() - before
        for ef in args.ef:
            set_ef(ef)
            times, r10, r50 = [], [], []
            for q, truth in zip(queries, exact, strict=True):
                t0 = time.perf_counter()
                got = search(q, 200)
                times.append((time.perf_counter() - t0) * 1000)
                r10.append(len(set(got[:10].tolist()) & set(truth[:10].tolist())) / 10)
                # What serving keeps: the exact top 10 of the 200 candidates, re-scored.
                best = got[np.argsort(-(items[got] @ q))[:10]]
                r50.append(len(set(best.tolist()) & set(truth[:10].tolist())) / 10)
            print(
                f"{name:>8} {build:>8.1f} {memory:>8.0f} {ef:>5} {np.mean(r10):>7.3f} "
                f"{np.mean(r50):>7.3f} {np.percentile(times, 50):>7.2f} "
                f"{np.percentile(times, 99):>7.2f}"
            )
        del search, set_ef
    exact_times = []
    for q in queries[:50]:
        t0 = time.perf_counter()
        np.argpartition(-(items @ q), 50)
        exact_times.append((time.perf_counter() - t0) * 1000)
    p50, p99 = np.percentile(exact_times, 50), np.percentile(exact_times, 99)
    print(f"{'exact':>8} {'':>8} {'':>8} {'':>5} {1.0:>7.3f} {1.0:>7.3f} {p50:>7.2f} {p99:>7.2f}")


if __name__ == "__main__":
    main()
