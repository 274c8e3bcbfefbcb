"""POPULAR at a large catalogue: the walk of the trending order beside ranking every item.

    python bench/ann_popular.py [--items 1000000] [--requests 2000]

The model layer only (RankingEngine.recommend, POPULAR, limit 10, default re-ranking), for users
with 50 seen items: one engine walks the trending order it sorted when the snapshot came in
(model.popular), the other ranks the whole catalogue (its order taken away), calls alternating.
Prints the sort's time, CPU p50/p99 of each, how many lists differ (none should: the walk gives
the whole-catalogue list) and how many calls the walk served (the others it leaves to the whole
catalogue: when the freshness boost could lift too many fresh items into the pool, which a
heavy-tailed trending distribution causes, since the boost scales with the pool's score range).
Benchmarks print numbers; they are not tests.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

import numpy as np
from recommend_latency import NOW
from threadpoolctl import threadpool_limits

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.popular import top_trending
from recgrpc.model.ranking import RankingConfig, RankingEngine, ServingSnapshot
from recgrpc.model.rerank import RerankConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--freshness-boost", type=float, default=RerankConfig().freshness_boost)
    parser.add_argument(
        "--trending", choices=["pareto", "lognormal"], default="pareto",
        help="trending scores: heavy-tailed (Pareto 1.5) or log-normal (sigma 0.5)",
    )  # fmt: skip
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")  # as the server does
    rng = np.random.default_rng(0)
    n = args.items
    rows = [
        (f"item{i}", [f"c{i % 30}"], [], NOW - timedelta(days=float(rng.uniform(0, 365))))
        for i in range(n)
    ]
    if args.trending == "pareto":
        trending = rng.pareto(1.5, n).astype(np.float32)
    else:
        trending = rng.lognormal(0.0, 0.5, n).astype(np.float32)
    config = RankingConfig(rerank=RerankConfig(freshness_boost=args.freshness_boost))
    snap = ServingSnapshot.assemble(
        CatalogIndex.build(rows), trending, NOW, model=None, config=config
    )
    started = time.perf_counter()
    walk = RankingEngine(snap)
    print(f"{n} items: trending order sorted in {time.perf_counter() - started:.2f} s")
    whole = RankingEngine(snap)
    whole._popular = None  # the engine as it ranks a small catalogue
    cpu: dict[str, list[float]] = {"walk": [], "whole": []}
    differ = walked = 0
    engines = [("walk", walk), ("whole", whole)]
    for k in range(args.requests + 50):
        seen = frozenset(f"item{i}" for i in rng.integers(0, n, 50))
        context = domain.UserContext(f"u{k}", True, seen_item_ids=seen)
        query = domain.RecommendationQuery(f"u{k}", 10, Algorithm.POPULAR)
        walked += top_trending(walk._popular, snap, context, query) is not None
        lists = {}
        for name, engine in engines[:: 1 if k % 2 else -1]:  # each goes first every other call
            start = time.thread_time()
            lists[name] = engine.recommend(context, query).items
            if k >= 50:
                cpu[name].append((time.thread_time() - start) * 1000)
        differ += [i.item_id for i in lists["walk"]] != [i.item_id for i in lists["whole"]]
    for name, values in cpu.items():
        p50, p99 = np.percentile(values, [50, 99])
        print(f"{name:>6}: CPU p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    print(f"lists that differ: {differ} of {args.requests + 50}; walked (no fallback to the whole "
          f"catalogue): {walked}")  # fmt: skip


if __name__ == "__main__":
    main()
