"""The approximate index (model.ann) at N items: build time, memory, recall@10, search latency.

    python bench/ann_index.py [--items 1000000] [--queries 300] [--kinds random trained]
                              [--probe-share 0.0625 0.125] [--fetch 250]

For each kind of vectors (bench/ann_data.py: random Gaussian, the worst case for an inverted
file, and "trained-like": clustered tastes, spread norms), builds the index the server builds
over ``[bias | embedding]`` rows and prints its build time (wall and process CPU), memory (the
index's own count and the resident-set growth while building), then per probe share: recall@10
of the index's first 10 and of what serving keeps (the exact top 10 of ``--fetch`` candidates
by score, as model.approximate keeps; serving fetches 250 at limit 10 with 50 seen items), and
the search's CPU and wall p50/p99 (one thread, like a request). The exact line scores every
item (numpy sgemv + argpartition). Benchmarks print numbers; they are not tests.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from ann_data import random_items, random_users, trained_like_items, trained_like_users
from threadpoolctl import threadpool_limits

from recgrpc.model.ann import PROBE_SHARE, ItemIndex

F32 = npt.NDArray[np.float32]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def exact_top(items: F32, queries: F32, k: int) -> list[npt.NDArray[np.intp]]:
    out = []
    for start in range(0, queries.shape[0], 32):
        block = items @ queries[start : start + 32].T
        for column in block.T:
            top = np.argpartition(-column, k)[:k]
            out.append(top[np.argsort(-column[top])])
    return out


def measure(kind: str, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(11)
    make_items, make_users = (random_items, random_users)
    if kind != "random":
        make_items, make_users = trained_like_items, trained_like_users
    items = np.asfortranarray(make_items(args.items, args.components, rng))
    queries = make_users(args.queries, args.components, rng)
    truth = exact_top(items, queries, 10)
    gc.collect()
    before, cpu_before = rss_mb(), time.process_time()
    index = ItemIndex(items, threads=args.threads)
    cpu = time.process_time() - cpu_before
    grown = rss_mb() - before
    print(
        f"{kind}: {args.items} items x {items.shape[1]} dims, {index.lists} lists; build "
        f"{index.build_seconds:.1f} s wall ({cpu:.1f} s CPU), index "
        f"{index.memory_bytes / 2**20:.0f} MB (RSS +{grown:.0f} MB); load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'probes':>7} {'share':>7} {'rec@10':>7} {'served':>7} {'cpu p50':>8} {'cpu p99':>8} "
        f"{'wall p50':>8} {'wall p99':>8}"
    )
    for share in args.probe_share:
        index.probes = max(1, math.ceil(share * index.lists))
        raw, served, cpu_ms, wall_ms = [], [], [], []
        for q, want in zip(queries, truth, strict=True):
            t0, c0 = time.perf_counter(), time.thread_time()
            got = index.search(q, args.fetch)[0]
            cpu_ms.append((time.thread_time() - c0) * 1000)
            wall_ms.append((time.perf_counter() - t0) * 1000)
            wanted = set(want.tolist())
            raw.append(len(set(got[:10].tolist()) & wanted) / 10)
            best = got[np.argsort(-(items[got] @ q))[:10]]
            served.append(len(set(best.tolist()) & wanted) / 10)
        print(
            f"{index.probes:>7} {share:>7.4f} {np.mean(raw):>7.3f} {np.mean(served):>7.3f} "
            f"{np.percentile(cpu_ms, 50):>8.2f} {np.percentile(cpu_ms, 99):>8.2f} "
            f"{np.percentile(wall_ms, 50):>8.2f} {np.percentile(wall_ms, 99):>8.2f}"
        )
    cpu_ms, wall_ms = [], []
    for q in queries[:100]:
        t0, c0 = time.perf_counter(), time.thread_time()
        scores = items @ q
        np.argpartition(-scores, args.fetch)
        cpu_ms.append((time.thread_time() - c0) * 1000)
        wall_ms.append((time.perf_counter() - t0) * 1000)
    print(
        f"{'exact':>7} {'':>7} {1.0:>7.3f} {1.0:>7.3f} {np.percentile(cpu_ms, 50):>8.2f} "
        f"{np.percentile(cpu_ms, 99):>8.2f} {np.percentile(wall_ms, 50):>8.2f} "
        f"{np.percentile(wall_ms, 99):>8.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="threads for building")
    parser.add_argument("--kinds", nargs="+", default=["random", "trained"])
    parser.add_argument("--probe-share", type=float, nargs="+", default=[PROBE_SHARE])
    parser.add_argument("--fetch", type=int, default=250, help="candidates per search")
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")  # as the server does (server.app)
    for kind in args.kinds:
        measure(kind, args)


if __name__ == "__main__":
    main()
