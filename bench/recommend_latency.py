"""Latency of one ranking call (RankingEngine.recommend) at 10k and 100k catalogue items.

    python bench/recommend_latency.py [--items 10000 100000] [--requests 2000] [--components 64]
                                      [--ann-min-items N] [--grpc]

Measures what GetRecommendations spends in the model layer: the allowed mask, user vector
(identity + preferences, or fold-in of recent clicks for a user the model does not know),
one matrix-vector product over precomputed float32 item representations, argpartition and
re-ranking (diversity and freshness on). The model is random (speed does not depend on what it
learned); items have 1-2 of 30 categories and 2 tags. The gRPC and database round trips are
not included by default. Wall-clock percentiles include time
the thread waited for a CPU (the machine's load average is printed); the cpu columns are the
calling thread's own CPU time, i.e. the work itself. ``--ann-min-items N`` ranks catalogues of
N items or more from the approximate index (model.ann), as the server's RECGRPC_ANN_MIN_ITEMS
does (its default here too); the index's build time and memory are printed.

``--grpc`` measures GetRecommendations end to end instead: the same catalogue and model stored
in a fresh SQLite file (the model as the active ``models`` row), a real server on a free port,
one client calling sequentially for users with 50 interactions each. That adds the user's
history lookup and the impression write to every call.
"""

from __future__ import annotations

import argparse
import inspect
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
from threadpoolctl import threadpool_limits

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, bulk, upgrade
from recgrpc.db import model_store as ms
from recgrpc.domain import Algorithm
from recgrpc.model import artifact
from recgrpc.model.artifact import RecommenderArrays
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.ranking import RankingConfig, RankingEngine, ServingSnapshot
from recgrpc.model.representations import ModelView
from recgrpc.model.rerank import RerankConfig
from recgrpc.server import create_server
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc

try:
    from recgrpc.model import user_memo as memo_module
except ImportError:  # the code before model.user_memo, timed side by side
    memo_module = None  # type: ignore[assignment]

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def build_engine(
    n_items: int,
    n_users: int,
    components: int,
    seed: int = 0,
    ann_min_items: int = 0,
    config: RankingConfig | None = None,
) -> RankingEngine:
    rng = np.random.default_rng(seed)
    cats = [f"c{c}" for c in range(30)]
    rows = []
    for i in range(n_items):
        item_cats = [cats[i % 30]] if i % 3 else [cats[i % 30], cats[(i + 7) % 30]]
        created = NOW - timedelta(days=float(rng.uniform(0, 365)))
        rows.append((f"item{i}", item_cats, [f"t{i % 50}", f"t{i % 7 + 50}"], created))
    tags = [f"t{t}" for t in range(57)]
    arrays = random_arrays(rows, cats, tags, [f"user{u}" for u in range(n_users)], components, rng)
    catalog = CatalogIndex.build(rows)
    started = time.perf_counter()
    view = ModelView.build(arrays, rows, ann_min_items=ann_min_items)
    if view.ann is not None:
        print(
            f"approximate index over {n_items} items: {time.perf_counter() - started:.1f} s "
            f"(with the item vectors), {view.ann.memory_bytes / 2**20:.0f} MB"
        )
    trending = rng.pareto(1.5, n_items).astype(np.float32)
    snapshot = ServingSnapshot.assemble(
        catalog, trending, NOW, model=view, config=config or RankingConfig()
    )
    return RankingEngine(snapshot)


def random_arrays(
    rows: Sequence[tuple[str, Sequence[str], Sequence[str], datetime]],
    categories: Sequence[str],
    tags: Sequence[str],
    user_ids: Sequence[str],
    components: int,
    rng: np.random.Generator,
) -> RecommenderArrays:
    """A random recommender over ``rows`` (item identity, category and tag features; user
    identity and preference features), trained on every item and user."""
    n_users = len(user_ids)
    item_names = [f"item:{r[0]}" for r in rows] + [f"category:{c}" for c in categories]
    item_names += [f"tag:{t}" for t in tags]
    user_names = [f"user:{u}" for u in user_ids] + [f"preference:{c}" for c in categories]
    index = {n: i for i, n in enumerate(item_names)}
    indptr, indices, data = [0], [], []
    for item_id, item_cats, item_tags, _ in rows:
        cols = [index[f"item:{item_id}"]] + [index[f"category:{c}"] for c in item_cats]
        cols += [index[f"tag:{t}"] for t in item_tags]
        indices += cols
        data += [1.0 / len(cols)] * len(cols)
        indptr.append(len(indices))
    return RecommenderArrays(
        version="bench",
        params={},
        user_ids=np.array(list(user_ids)),
        item_ids=np.array([r[0] for r in rows]),
        user_feature_names=np.array(user_names),
        item_feature_names=np.array(item_names),
        user_feature_embeddings=rng.normal(0, 0.1, (len(user_names), components)).astype(
            np.float32
        ),
        user_feature_biases=np.zeros(len(user_names), dtype=np.float32),
        item_feature_embeddings=rng.normal(0, 0.1, (len(item_names), components)).astype(
            np.float32
        ),
        item_feature_biases=rng.normal(0, 0.1, len(item_names)).astype(np.float32),
        item_features_indptr=np.array(indptr, dtype=np.int32),
        item_features_indices=np.array(indices, dtype=np.int32),
        item_features_data=np.array(data, dtype=np.float32),
        user_trained_until=np.full(n_users, NOW.timestamp() - 86400 * 30),
        user_train_weight=np.full(n_users, 10.0, dtype=np.float32),
        typical_user_norm=1.0,
        newest_event=NOW.timestamp(),
    )


def build_artifact_and_rows(
    n_items: int, n_users: int, components: int
) -> tuple[RecommenderArrays, list[tuple[str, list[str], list[str], datetime]]]:
    engine = build_engine(n_items, n_users, components)
    view = engine.snapshot.model
    assert view is not None
    catalog = engine.snapshot.catalog
    rows = [
        (item_id, list(cats), [], datetime.fromtimestamp(float(ts), UTC))
        for item_id, cats, ts in zip(
            catalog.item_ids, catalog.categories, catalog.created_at, strict=True
        )
    ]
    return view.arrays, rows


def seed_served_world(url: str, n_items: int, n_users: int, components: int, users: int) -> None:
    """The catalogue and random model of ``build_engine`` stored in the (empty) database at
    ``url``, the model active, and ``users`` users with 50 clicks each (user0, user1, ...)."""
    arrays, rows = build_artifact_and_rows(n_items, n_users, components)
    rng = np.random.default_rng(2)
    upgrade(url)
    db = Database(url)
    items = [domain.Item(r[0], categories=r[1], created_at=r[3]) for r in rows]
    events = [
        domain.Interaction(
            f"e{u}-{k}", f"user{u}", f"item{int(i)}", domain.InteractionType.CLICK,
            NOW - timedelta(days=40),
        )
        for u in range(users)
        for k, i in enumerate(rng.integers(0, n_items, 50))
    ]  # fmt: skip
    with db.writer() as session:
        bulk.upsert_items(session, items, NOW)
        bulk.upsert_users(session, [domain.User(f"user{u}") for u in range(users)], NOW)
        bulk.insert_interactions(session, events, NOW)
        ms.store_model(
            session, kind=ms.RECOMMENDER, version="bench", params={}, metrics={},
            artifact=artifact.encode(arrays), now=NOW,
        )  # fmt: skip
        ms.activate_model(session, ms.RECOMMENDER, "bench", NOW)
    db.dispose()


def grpc_latency(
    n_items: int, n_users: int, components: int, requests: int, limit: int, ann_min_items: int
) -> None:
    users = 200
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/latency.db"
        seed_served_world(url, n_items, n_users, components, users)
        db = Database(url)
        settings = Settings(
            database_url=url, host="127.0.0.1", port=0, metrics_port=0, ann_min_items=ann_min_items
        )
        started = time.perf_counter()
        server = create_server(settings, db=db)
        try:
            assert server.wait_ready(1800)
            print(f"{n_items:>8} items: server ready in {time.perf_counter() - started:.1f} s")
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pb_grpc.RecommendationServiceStub(channel)
                algorithms = [pb.ALGORITHM_HYBRID, pb.ALGORITHM_AUTO, pb.ALGORITHM_CONTENT]
                timings: list[float] = []
                for k in range(requests + 50):
                    request = pb.GetRecommendationsRequest(
                        user_id=f"user{k % users}", limit=limit, algorithm=algorithms[k % 3]
                    )
                    start = time.perf_counter()
                    response = stub.GetRecommendations(request, timeout=10)
                    if k >= 50:  # warm-up excluded
                        timings.append((time.perf_counter() - start) * 1000)
                    assert response.model_version == "bench"
            v = np.array(timings)
            print(
                f"{n_items:>8} {'gRPC':>8} {np.percentile(v, 50):>8.2f} "
                f"{np.percentile(v, 99):>8.2f} {v.max():>8.2f}   (end to end, SQLite)"
            )
        finally:
            server.stop(grace=1)
            db.dispose()


def contexts(n_items: int, n_users: int, count: int) -> list[tuple[domain.UserContext, Algorithm]]:
    rng = np.random.default_rng(1)
    out = []
    for k in range(count):
        seen = frozenset(f"item{i}" for i in rng.integers(0, n_items, 50))
        if k % 3 == 2:  # a user the model does not know: fold-in of 20 recent clicks
            recent = tuple(
                domain.RecentInteraction(
                    f"item{int(i)}", domain.InteractionType.CLICK, 0.0, NOW - timedelta(hours=1)
                )
                for i in rng.integers(0, n_items, 20)
            )
            ctx = domain.UserContext(f"new{k}", True, seen_item_ids=seen, recent=recent)
        else:
            ctx = domain.UserContext(
                f"user{int(rng.integers(n_users))}",
                True,
                seen_item_ids=seen,
                preferences={"c3": 1.0, "c7": 0.5},
            )
        algorithm = (Algorithm.HYBRID, Algorithm.CONTENT, Algorithm.AUTO, Algorithm.POPULAR)[k % 4]
        out.append((ctx, algorithm))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument(
        "--ann-min-items", type=int, default=Settings.__dataclass_fields__["ann_min_items"].default,
        help="rank catalogues this large from the approximate index (0: never)",
    )  # fmt: skip
    parser.add_argument("--grpc", action="store_true", help="end to end through a real server")
    parser.add_argument(
        "--calls", nargs="+", default=["cold", "warm", "repeat"],
        choices=["cold", "warm", "repeat"], help="which calls to time (see in_process)",
    )  # fmt: skip
    defaults = Settings.__dataclass_fields__
    parser.add_argument("--diversity", type=float, default=defaults["diversity"].default)
    parser.add_argument(
        "--freshness-boost", type=float, default=defaults["freshness_boost"].default
    )
    args = parser.parse_args()
    # As the server does (server.app): one BLAS thread per matrix-vector product.
    threadpool_limits(limits=1, user_api="blas")
    if args.grpc:
        print(f"{'items':>8} {'source':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for n_items in args.items:
            grpc_latency(
                n_items, args.users, args.components, args.requests, args.limit, args.ann_min_items
            )
        return
    header = f"{'items':>8} {'call':>14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    load = os.getloadavg()[0]
    print(
        f"{header} {'cpu p50':>8} {'cpu p99':>8}  (limit {args.limit}; diversity "
        f"{args.diversity}; freshness boost {args.freshness_boost}; load {load:.1f})"
    )
    config = RankingConfig(
        rerank=RerankConfig(diversity=args.diversity, freshness_boost=args.freshness_boost)
    )
    for n_items in args.items:
        engine = build_engine(
            n_items, args.users, args.components, ann_min_items=args.ann_min_items, config=config
        )
        cases = contexts(n_items, args.users, args.requests)
        for mode in args.calls:
            in_process(engine, cases, args.limit, mode, n_items)


def in_process(
    engine: RankingEngine,
    cases: list[tuple[domain.UserContext, Algorithm]],
    limit: int,
    mode: str,
    n_items: int,
) -> None:
    """Time one call per case: ``cold`` a context just read (a new memo, as the server gives a
    context it has just cached), ``warm`` a cached context asked for its next page (the first
    list's items excluded: a query its memo has not seen), ``repeat`` the same query again."""
    remembers = "memo" in inspect.signature(engine.recommend).parameters

    def call(ctx: domain.UserContext, q: domain.RecommendationQuery, memo: object) -> list[str]:
        ranking = engine.recommend(ctx, q, memo) if remembers else engine.recommend(ctx, q)  # type: ignore[call-arg]
        return [i.item_id for i in ranking.items]

    timings: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for ctx, algorithm in cases[:50]:  # warm-up
        call(ctx, domain.RecommendationQuery(ctx.user_id, limit, algorithm), new_memo())
    for ctx, algorithm in cases:
        query = domain.RecommendationQuery(ctx.user_id, limit, algorithm)
        memo = new_memo()
        if mode != "cold":
            first = call(ctx, query, memo)
            if mode == "warm":
                query = replace(query, exclude_item_ids=frozenset(first))
        start, start_cpu = time.perf_counter(), time.thread_time()
        call(ctx, query, memo)
        elapsed = (time.perf_counter() - start) * 1000
        used = (time.thread_time() - start_cpu) * 1000
        for key in (algorithm.value, "all"):
            timings.setdefault(key, []).append(elapsed)
            cpu.setdefault(key, []).append(used)
    for name, values in timings.items():
        v, c = np.array(values), np.array(cpu[name])
        print(
            f"{n_items:>8} {mode + ' ' + name:>14} {np.percentile(v, 50):>8.2f} "
            f"{np.percentile(v, 99):>8.2f} {v.max():>8.2f} "
            f"{np.percentile(c, 50):>8.2f} {np.percentile(c, 99):>8.2f}"
        )


def new_memo() -> object:
    """A memo as the server keeps with a cached context (None before model.user_memo)."""
    return None if memo_module is None else memo_module.UserMemo()


if __name__ == "__main__":
    main()
