"""GetRecommendations end to end at a large catalogue: the approximate index beside exact scoring.

    python bench/ann_grpc.py [--items 1000000] [--requests 300] [--vectors trained|random]
                             [--sources HYBRID AUTO CONTENT POPULAR]

Stores a catalogue of ``--items`` items (1-2 of 30 categories, 2 tags, as in
bench/recommend_latency.py) and a model over it (random, or with trained-like item and user
vectors: bench/ann_data.py) as the active model in a fresh SQLite file, with 200 users of 50
clicks each. Starts two real servers on that file (``recgrpc serve`` processes): one ranking
from the approximate index (the default ``RECGRPC_ANN_MIN_ITEMS``) and one exact
(``RECGRPC_ANN_MIN_ITEMS=0``), and prints each one's start time (catalogue and model load,
index build). One client then calls each server sequentially, alternating between them in
blocks of 10 calls so that the load other jobs put on the machine falls on both alike, and
prints per source the wall-clock p50/p99 of each, recall@10 of the index server's lists against
the exact server's, and the share of the exact lists' scores the index's lists hold (items of
equal score are interchangeable: CONTENT's items with the same features). ``--no-exact``
starts the index server only (for profiling it).
Benchmarks print numbers; they are not tests.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import grpc
import numpy as np
from ann_data import trained_like_arrays
from harness_load import ServerProcess
from recommend_latency import NOW, random_arrays

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, bulk, upgrade
from recgrpc.db import model_store as ms
from recgrpc.model import artifact
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc

USERS = 200
BLOCK = 10


def seed(url: str, n_items: int, components: int, vectors: str) -> None:
    rng = np.random.default_rng(0)
    cats = [f"c{c}" for c in range(30)]
    tags = [f"t{t}" for t in range(57)]
    rows = []
    for i in range(n_items):
        item_cats = [cats[i % 30]] if i % 3 else [cats[i % 30], cats[(i + 7) % 30]]
        created = NOW - timedelta(days=float(rng.uniform(0, 365)))
        rows.append((f"item{i}", item_cats, [f"t{i % 50}", f"t{i % 7 + 50}"], created))
    arrays = random_arrays(rows, cats, tags, [f"user{u}" for u in range(USERS)], components, rng)
    if vectors == "trained":
        arrays = trained_like_arrays(arrays, rng)
    upgrade(url)
    db = Database(url)
    events = [
        domain.Interaction(
            f"e{u}-{k}", f"user{u}", f"item{int(i)}", domain.InteractionType.CLICK,
            NOW - timedelta(days=40),
        )
        for u in range(USERS)
        for k, i in enumerate(rng.integers(0, n_items, 50))
    ]  # fmt: skip
    with db.writer() as session:
        for start in range(0, n_items, 50_000):
            chunk = rows[start : start + 50_000]
            items = [domain.Item(r[0], categories=r[1], tags=r[2], created_at=r[3]) for r in chunk]
            bulk.upsert_items(session, items, NOW)
        bulk.upsert_users(session, [domain.User(f"user{u}") for u in range(USERS)], NOW)
        bulk.insert_interactions(session, events, NOW)
        ms.store_model(
            session, kind=ms.RECOMMENDER, version="bench", params={}, metrics={},
            artifact=artifact.encode(arrays), now=NOW,
        )  # fmt: skip
        ms.activate_model(session, ms.RECOMMENDER, "bench", NOW)
    db.dispose()


def start_server(url: str, ann_min_items: int) -> tuple[ServerProcess, grpc.Channel]:
    """``recgrpc serve`` in its own process (its refresher and writers do not share the
    client's interpreter), serving once the model is loaded."""
    env = {"RECGRPC_ANN_MIN_ITEMS": str(ann_min_items), "RECGRPC_DASHBOARD_PORT": "0"}
    with patched_environ(env):
        server = ServerProcess(url, workers=1)
    server.wait_serving(3600)
    channel = grpc.insecure_channel(server.target)
    stub = pb_grpc.RecommendationServiceStub(channel)
    while True:  # serving means ready; the model may still be loading
        got = stub.GetRecommendations(
            pb.GetRecommendationsRequest(user_id="user0", limit=1), timeout=600
        )
        if got.model_version == "bench":
            return server, channel
        time.sleep(1)


@contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300, help="per source and server")
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--vectors", choices=["trained", "random"], default="trained")
    parser.add_argument("--sources", nargs="+", default=["HYBRID", "AUTO", "CONTENT", "POPULAR"])
    parser.add_argument(
        "--ann-min-items", type=int, default=Settings.__dataclass_fields__["ann_min_items"].default
    )
    parser.add_argument("--no-exact", action="store_true", help="the index server only")
    parser.add_argument(
        "--database", help="SQLite file to seed and keep (an existing one is served as it is)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.database or f"{tmp}/ann.db"
        url = f"sqlite:///{path}"
        if not os.path.exists(path):
            started = time.perf_counter()
            seed(url, args.items, args.components, args.vectors)
            print(f"{args.items} items ({args.vectors} vectors) seeded in "
                  f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        servers, channels = {}, {}
        try:
            wanted = [("index", args.ann_min_items)] + ([] if args.no_exact else [("exact", 0)])
            for name, threshold in wanted:
                started = time.perf_counter()
                servers[name], channels[name] = start_server(url, threshold)
                took = time.perf_counter() - started
                print(f"{name} server serving the model after {took:.0f} s (pid "
                      f"{servers[name].proc.pid})")  # fmt: skip
            measure(channels, args)
        finally:
            for channel in channels.values():
                channel.close()
            for server in servers.values():
                server.stop()


def measure(channels: dict[str, grpc.Channel], args: argparse.Namespace) -> None:
    stubs = {name: pb_grpc.RecommendationServiceStub(c) for name, c in channels.items()}
    print(f"load {os.getloadavg()[0]:.1f}; wall ms per call, one client, limit {args.limit}")
    print(f"{'source':>8} {'index p50':>9} {'index p99':>9} {'exact p50':>9} {'exact p99':>9} "
          f"{'rec@10':>7} {'scores':>7}")  # fmt: skip
    for source in args.sources:
        algorithm = pb.Algorithm.Value(f"ALGORITHM_{source}")
        timings: dict[str, list[float]] = {name: [] for name in stubs}
        lists: dict[str, dict[int, list[tuple[str, float]]]] = {name: {} for name in stubs}
        for block in range(-1, args.requests // BLOCK):  # block -1: warm-up
            for name, stub in stubs.items():
                for k in range(BLOCK):
                    n = block * BLOCK + k
                    request = pb.GetRecommendationsRequest(
                        user_id=f"user{n % USERS}", limit=args.limit, algorithm=algorithm
                    )
                    t0 = time.perf_counter()
                    response = stub.GetRecommendations(request, timeout=30)
                    if block >= 0:
                        timings[name].append((time.perf_counter() - t0) * 1000)
                        lists[name][n] = [(r.item_id, r.score) for r in response.recommendations]
        pairs = [(got, lists["exact"][n]) for n, got in lists["index"].items() if "exact" in lists]
        recall = [len({i for i, _ in got} & {i for i, _ in want}) / 10 for got, want in pairs]
        # Items of equal score (CONTENT: items with the same features) are interchangeable:
        # the share of the exact list's scores the index's list has too.
        same = [score_overlap([s for _, s in got], [s for _, s in want]) for got, want in pairs]
        p = {name: np.percentile(v, [50, 99]) for name, v in timings.items()}
        p.setdefault("exact", np.full(2, np.nan))
        print(
            f"{source:>8} {p['index'][0]:>9.2f} {p['index'][1]:>9.2f} {p['exact'][0]:>9.2f} "
            f"{p['exact'][1]:>9.2f} {np.mean(recall) if recall else np.nan:>7.3f} "
            f"{np.mean(same) if same else np.nan:>7.3f}"
        )


def score_overlap(got: list[float], want: list[float]) -> float:
    """Share of ``want`` matched one to one by a score of ``got`` (to float32 rounding)."""
    left = sorted(got)
    matched = 0
    for score in want:
        for k, other in enumerate(left):
            if abs(other - score) <= 1e-5 * max(1.0, abs(score)):
                matched += 1
                del left[k]
                break
    return matched / max(1, len(want))


if __name__ == "__main__":
    main()
