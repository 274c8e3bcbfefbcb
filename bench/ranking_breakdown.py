"""Per-step CPU of one ranking call (RankingEngine.recommend), per source, in-process.

    python bench/ranking_breakdown.py [--items 10000] [--requests 2000] [--components 64]
                                      [--rounds 3]

The catalogue, random model and request mix of bench/recommend_latency.py (users with 50 seen
items; a third folded in from 20 recent clicks), one BLAS thread as the server runs it. Prints
the calling thread's CPU time per call (p50 and p99, microseconds) of the whole call per source
for a context just read (``recommend``: a new memo, as the server keeps with a context it has
just cached) and for a cached one asked for its next page (``warm``: the memo has this source's
pool; the first list's items excluded), and of the steps taken alone with the same inputs: the
user vector, scoring (matrix-vector product into a reused buffer), masking the
seen/dismissed/excluded items, re-ranking from the whole catalogue (``rerank``), building the
memo's pool (``pool``) and picking a next page from it (``pick``: model.memo_pool, with
``rerank_pool``). What the whole call spends beyond the steps is the engine's own bookkeeping
(choosing the source, building the list). ``--rounds`` repeats the measurement, alternating,
so a busy machine shows as spread between rounds rather than as a difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from recommend_latency import build_engine, contexts

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.memo_pool import MEMO_TOP, build_pool, pick_for
from recgrpc.model.ranking import RankingEngine, mask_blocked
from recgrpc.model.rerank import rerank, rerank_pool
from recgrpc.model.scoring import scores as score_items
from recgrpc.model.user_memo import UserMemo

Step = tuple[Callable[[], object], Callable[[], object]]
"""(setup, call): only ``call`` is timed; ``setup`` leaves the shared buffer as the engine
would have it at that point of a request."""


def cpu_us(step: Step) -> float:
    """Thread CPU time of one call, in microseconds."""
    setup, call = step
    setup()
    start = time.thread_time_ns()
    call()
    return (time.thread_time_ns() - start) / 1000


def nothing() -> None:
    pass


def steps(
    engine: RankingEngine, ctx: domain.UserContext, algorithm: Algorithm, work: np.ndarray
) -> dict[str, Step]:
    """The whole call and its steps, for one request (HYBRID's steps for AUTO's pick), the
    steps working in ``work`` as the engine works in its reused buffer."""
    snap = engine.snapshot
    model = snap.model
    assert model is not None
    query = domain.RecommendationQuery(ctx.user_id, 10, algorithm)
    warm, first = UserMemo(), engine.recommend(ctx, query, UserMemo())
    page = replace(query, exclude_item_ids=frozenset(i.item_id for i in first.items))
    engine.recommend(ctx, query, warm)
    out: dict[str, Step] = {
        "recommend": (nothing, lambda: engine.recommend(ctx, query, UserMemo())),
        "warm": (
            warm.state(ctx, snap).lists.clear,  # (the pool stays: the list does not)
            lambda: engine.recommend(ctx, page, warm),
        ),
    }
    if algorithm == Algorithm.POPULAR:

        def scored() -> None:
            np.copyto(work, snap.trending)
    else:
        source = Algorithm.HYBRID if algorithm == Algorithm.AUTO else algorithm
        weights, position = snap.config.event_weights, snap.catalog.position
        vector = model.user_vector(source, ctx, position, weights)
        assert vector is not None
        items, unscored = model.items_for(source), model.unscored_by(source)

        def scored() -> None:
            score_items(items, vector, out=work)
            work[unscored] = -np.inf

        out["user_vector"] = (nothing, lambda: model.user_vector(source, ctx, position, weights))
        out["score"] = (nothing, lambda: score_items(items, vector, out=work))

    def masked() -> None:
        scored()
        mask_blocked(work, snap.catalog, ctx, query)

    out["mask"] = (scored, lambda: mask_blocked(work, snap.catalog, ctx, query))
    out["rerank"] = (
        masked,
        lambda: rerank(
            work,
            10,
            categories=snap.catalog.categories,
            fresh=snap.freshness,
            fresh_items=snap.fresh_items,
            config=snap.config.rerank,
        ),
    )
    boost = snap.config.rerank.freshness_boost

    def user_masked() -> None:
        scored()
        mask_blocked(work, snap.catalog, ctx, replace(query, exclude_item_ids=frozenset()))

    out["pool"] = (
        user_masked,
        lambda: build_pool(work, MEMO_TOP, snap.freshness, snap.fresh_items, boost),
    )
    user_masked()
    pool = build_pool(work.copy(), MEMO_TOP, snap.freshness, snap.fresh_items, boost)

    def picked() -> object:
        chosen = pick_for(pool, snap.catalog, page, boost)
        if chosen is None:
            return None
        return rerank_pool(
            chosen.pool, chosen.pool_scores, 10, fresh_items=chosen.fresh_items,
            fresh_raw=chosen.fresh_raw, categories=snap.catalog.categories,
            fresh=snap.freshness, config=snap.config.rerank,
        )  # fmt: skip

    out["pick"] = (nothing, picked)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")
    engine = build_engine(args.items, args.users, args.components)
    cases = contexts(args.items, args.users, args.requests)
    work = np.empty(args.items, dtype=np.float32)
    per_case = [(a.value, steps(engine, ctx, a, work)) for ctx, a in cases]
    names = ["recommend", "warm", "user_vector", "score", "mask", "rerank", "pool", "pick"]
    print(f"{args.items} items, {args.components} components; load {os.getloadavg()[0]:.1f}")
    print(f"{'round':>5} {'source':>14} " + " ".join(f"{n:>16}" for n in names))
    print(f"{'':>5} {'':>14} " + " ".join(f"{'p50/p99 us':>16}" for _ in names))
    for step in [c for _, s in per_case[:100] for c in s.values()]:  # warm-up
        cpu_us(step)
    for r in range(args.rounds):
        results: dict[tuple[str, str], list[float]] = {}
        for name in names:
            for source, calls in per_case:
                if name in calls:
                    took = cpu_us(calls[name])
                    results.setdefault((source, name), []).append(took)
                    results.setdefault(("all", name), []).append(took)
        for source in [*dict.fromkeys(s for s, _ in per_case), "all"]:
            cells = []
            for name in names:
                v = results.get((source, name))
                cells.append(
                    f"{'-':>16}" if v is None
                    else f"{np.percentile(v, 50):>8.1f}/{np.percentile(v, 99):<7.1f}"
                )  # fmt: skip
            print(f"{r:>5} {source:>14} " + " ".join(cells))


if __name__ == "__main__":
    main()
