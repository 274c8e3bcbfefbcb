"""CPU per call of the discovery RPCs' model part beside GetRecommendations' ranking, in-process.

    python bench/discovery_latency.py [--items 10000 100000] [--requests 300] [--components 64]
                                      [--profile]

Builds, in memory, the demo world ``recgrpc bench`` seeds (``recgrpc.jobs.demo``: 2000 users,
50000 events), a random recommender over its items (bench/recommend_latency.py; speed does not
depend on what the model learned), the item-neighbour artifact ``recgrpc train`` builds from
the same events, and each user's context as the database would hand it over (seen items, the
100 newest events, preferences). Then times, per call, what happens between reading the context
and recording the impression:

- GetRecommendations: ``RankingEngine.recommend`` (AUTO, limit 10),
- GetSimilarItems: ``server.discovery_lists.similar_list`` for a random item and a signed-in
  user (AUTO, limit 10, personalised),
- GetFrequentlyTogether: ``together_list`` for a random two-item basket,
- GetHomeFeed: ``model.home_feed.build_feed`` with every shelf (shelf size 10),

the same requests ``recgrpc bench`` sends. Columns: wall p50/p99 and the calling thread's CPU
p50/p99 (``time.thread_time``: the work itself, not time spent waiting for a CPU), and CPU p50
as a multiple of GetRecommendations'. ``--profile`` prints a pyinstrument profile of each
discovery call instead (pyinstrument must be installed).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from datetime import datetime

import numpy as np
from recommend_latency import random_arrays  # bench/ is the script's folder, so on the path
from threadpoolctl import threadpool_limits

from recgrpc import domain
from recgrpc.jobs.demo import generate_demo
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.home_feed import HomeFeedQuery, build_feed, liked_anchor
from recgrpc.model.neighbour_artifact import NeighbourParams, build_neighbours
from recgrpc.model.ranking import RankingConfig, RankingEngine, ServingSnapshot
from recgrpc.model.representations import ModelView
from recgrpc.model.similar import ItemText, SimilarityIndex
from recgrpc.model.weights import EventWeights
from recgrpc.server.discovery_lists import similar_list, together_list
from recgrpc.server.discovery_types import SimilarQuery, TogetherQuery

RECENT = 100
"""Events per user context, as ``db.serving.load_user_context`` reads them."""


class World:
    """The served snapshot, neighbour index, item texts and user contexts at ``n_items``."""

    def __init__(self, n_items: int, users: int, events: int, components: int) -> None:
        demo = generate_demo(7, n_users=users, n_items=n_items, n_interactions=events)
        self.now: datetime = demo.now
        rows = sorted(
            (i.item_id, list(i.categories), list(i.tags), i.created_at) for i in demo.items
        )
        user_ids = [u.user_id for u in demo.users]
        tags = sorted({t for i in demo.items for t in i.tags})
        rng = np.random.default_rng(0)
        arrays = random_arrays(rows, demo.categories, tags, user_ids, components, rng)
        catalog = CatalogIndex.build(rows)
        view = ModelView.build(arrays, rows)
        trending = np.zeros(len(catalog), dtype=np.float32)
        for event in demo.interactions:
            trending[catalog.position[event.item_id]] += 1.0
        self.snap = ServingSnapshot.assemble(
            catalog, trending, self.now, model=view, config=RankingConfig()
        )
        self.engine = RankingEngine(self.snap)
        self.texts = {
            i.item_id: ItemText(i.item_id, i.title, tuple(i.categories), tuple(i.tags))
            for i in demo.items
        }
        self.index = SimilarityIndex.build(
            self._neighbours(demo, catalog, user_ids), catalog, view.hybrid[:, 1:]
        )
        prefs = {u.user_id: dict(u.preferences) for u in demo.users}
        history: dict[str, list[domain.Interaction]] = {}
        for event in demo.interactions:  # in time order
            history.setdefault(event.user_id, []).append(event)
        self.contexts = [
            domain.UserContext(
                uid,
                True,
                seen_item_ids=frozenset(e.item_id for e in events),
                preferences=prefs.get(uid, {}),
                recent=tuple(
                    domain.RecentInteraction(e.item_id, e.type, e.value, e.occurred_at)
                    for e in reversed(events[-RECENT:])
                ),
            )
            for uid, events in sorted(history.items())
        ]

    def _neighbours(self, demo, catalog, user_ids):  # type: ignore[no-untyped-def]
        weights = EventWeights()
        user_pos = {u: n for n, u in enumerate(user_ids)}
        positive = [e for e in demo.interactions if weights.weight(e.type.value, e.value) > 0]
        users = np.array([user_pos[e.user_id] for e in positive], dtype=np.int64)
        items = np.array([catalog.position[e.item_id] for e in positive], dtype=np.int64)
        times = np.array([e.occurred_at.timestamp() for e in positive], dtype=np.float64)
        texts = [
            (self.texts[i].title, self.texts[i].categories, self.texts[i].tags)
            for i in catalog.item_ids
        ]
        return build_neighbours(
            "bench",
            item_ids=catalog.item_ids,
            positives=(users, items),
            events=(users, items, times),
            texts=texts,
            params=NeighbourParams(),
        )

    def calls(self, seed: int) -> dict[str, Callable[[], object]]:
        """One random request per RPC (as bench/harness_load.py draws them)."""
        rng = random.Random(seed)
        ctx = rng.choice(self.contexts)
        a, b = rng.sample(self.snap.catalog.item_ids, 2)
        snap, index = self.snap, self.index
        anchor_id = liked_anchor(ctx, snap.config.event_weights)
        anchor = self.texts[anchor_id] if anchor_id else None
        return {
            "GetRecommendations": lambda: self.engine.recommend(
                ctx, domain.RecommendationQuery(ctx.user_id, 10, domain.Algorithm.AUTO)
            ),
            "GetSimilarItems": lambda: similar_list(
                snap, index, SimilarQuery(a, 10, ctx.user_id), self.texts[a], ctx
            ),
            "GetFrequentlyTogether": lambda: together_list(
                snap,
                index,
                TogetherQuery((a, b), 10, ctx.user_id),
                [self.texts[a], self.texts[b]],
                ctx,
            ),
            "GetHomeFeed": lambda: build_feed(
                snap,
                index,
                ctx,
                HomeFeedQuery(ctx.user_id, 10),
                now=self.now,
                stale_after_days=30.0,
                anchor=anchor,
            ),
        }


def measure(world: World, requests: int) -> dict[str, tuple[list[float], list[float]]]:
    for k in range(20):  # warm-up
        for call in world.calls(10_000 + k).values():
            call()
    out: dict[str, tuple[list[float], list[float]]] = {}
    for k in range(requests):
        for name, call in world.calls(k).items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            call()
            wall = (time.perf_counter() - start) * 1000
            cpu = (time.thread_time() - start_cpu) * 1000
            walls, cpus = out.setdefault(name, ([], []))
            walls.append(wall)
            cpus.append(cpu)
    return out


def profile(world: World, requests: int) -> None:
    from pyinstrument import Profiler  # noqa: PLC0415 (optional, only for --profile)

    for name in ("GetSimilarItems", "GetFrequentlyTogether", "GetHomeFeed"):
        profiler = Profiler(interval=0.0002)
        profiler.start()
        for k in range(requests):
            world.calls(k)[name]()
        profiler.stop()
        print(f"==== {name}")
        print(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="pyinstrument, not timings")
    args = parser.parse_args()
    # As the server does (server.app): one BLAS thread per matrix-vector product.
    threadpool_limits(limits=1, user_api="blas")
    print(f"load average {os.getloadavg()[0]:.1f}")
    header = f"{'items':>8} {'call':<22} {'p50 ms':>8} {'p99 ms':>8} {'cpu p50':>8} {'cpu p99':>8}"
    for n_items in args.items:
        started = time.perf_counter()
        world = World(n_items, args.users, args.events, args.components)
        print(f"built {n_items} items in {time.perf_counter() - started:.0f}s")
        if args.profile:
            profile(world, args.requests)
            continue
        print(f"{header} {'x GetRec cpu':>12}")
        results = measure(world, args.requests)
        base = float(np.percentile(results["GetRecommendations"][1], 50))
        for name, (walls, cpus) in results.items():
            w, c = np.array(walls), np.array(cpus)
            c50 = float(np.percentile(c, 50))
            print(
                f"{n_items:>8} {name:<22} {np.percentile(w, 50):>8.2f} {np.percentile(w, 99):>8.2f}"
                f" {c50:>8.2f} {np.percentile(c, 99):>8.2f} {c50 / base:>12.1f}"
            )


if __name__ == "__main__":
    main()
