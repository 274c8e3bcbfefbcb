"""Item-neighbour build time and memory beside the LightFM fit, on the same generated data.

    python bench/neighbours_build.py [--items 100000] [--users 50000]
                                     [--interactions 1000000] [--epochs 10]

Generates the demo world in memory (``recgrpc.jobs.demo``, no database), builds the features
and weights ``recgrpc train`` builds, then times, one after the other on the same data:

- the LightFM fit: ``--epochs`` epochs of ``HybridRecommender.fit_partial`` on the training
  matrices (what ``recgrpc train`` runs before early stopping ends it),
- the neighbour build ``recgrpc train`` runs after it: behaviour table, session rules and
  content index (``model.neighbour_artifact.build_neighbours``), and its npz encoding,

and reports the build's peak traced memory (numpy allocations are traced) beside the size of
the stored tables and of a dense items x items float32 matrix, which is never built.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from recgrpc.config import Settings
from recgrpc.jobs.demo import generate_demo
from recgrpc.model import neighbour_artifact
from recgrpc.model.evaluation import temporal_holdout
from recgrpc.model.features import build_interaction_data
from recgrpc.model.recommender import HybridRecommender
from recgrpc.model.training import params_from_settings, training_matrices
from recgrpc.model.weights import EventWeights
from recgrpc.records import TrainingRows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    settings = Settings()

    started = time.perf_counter()
    world = generate_demo(
        args.seed, n_users=args.users, n_items=args.items, n_interactions=args.interactions
    )
    rows = TrainingRows(
        items=[(i.item_id, list(i.categories), list(i.tags), i.created_at) for i in world.items],
        users=[(u.user_id, dict(u.attributes)) for u in world.users],
        preferences=[(u.user_id, c, s) for u in world.users for c, s in u.preferences.items()],
        interactions=[
            (e.user_id, e.item_id, e.type.value, e.value, e.occurred_at) for e in world.interactions
        ],
        feedback=[],
    )
    rows.items.sort()
    titles = {i.item_id: i.title for i in world.items}
    data = build_interaction_data(rows, settings)
    holdout = temporal_holdout(data)
    print(
        f"data: {data.n_items} items, {data.n_users} users, {len(rows.interactions)} "
        f"interactions, {data.pair_user.size} positive pairs "
        f"(generated and featurised in {time.perf_counter() - started:.0f}s)"
    )

    params = params_from_settings(settings)
    rec = HybridRecommender(
        params, data.user_ids, data.item_ids,
        user_feature_names=data.user_feature_names, item_feature_names=data.item_feature_names,
        item_features=data.item_features, user_features=data.user_features,
    )  # fmt: skip
    weight_scale = float(holdout.train_weight.mean())
    interactions, weights = training_matrices(data, holdout, weight_scale, params.loss)
    started = time.perf_counter()
    rec.fit_partial(interactions, weights, epochs=args.epochs, num_threads=2)
    fit = time.perf_counter() - started

    def build() -> neighbour_artifact.NeighbourArrays:
        positives, events, texts = neighbour_artifact.training_inputs(
            data, rows, titles, EventWeights.of(settings)
        )
        return neighbour_artifact.build_neighbours(
            "bench",
            item_ids=data.item_ids,
            positives=positives,
            events=events,
            texts=texts,
            params=neighbour_artifact.NeighbourParams.from_settings(settings),
        )

    started = time.perf_counter()
    built = build()
    seconds = time.perf_counter() - started
    # Again under tracemalloc for the peak (tracing slows it down: not timed).
    tracemalloc.start()
    build()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.perf_counter()
    blob = neighbour_artifact.encode(built)
    encode = time.perf_counter() - started

    n = data.n_items
    tables = sum(
        t.indptr.nbytes + t.indices.nbytes + t.scores.nbytes
        for t in (built.behaviour, built.together)
    )
    summary = neighbour_artifact.summary(built)
    print(f"LightFM fit, {args.epochs} epochs: {fit:.1f}s ({fit / args.epochs:.2f}s per epoch)")
    print(
        f"neighbour build: {seconds:.1f}s = {seconds / fit:.2f}x the fit; "
        f"npz encoding {encode:.1f}s, {len(blob) / 1e6:.1f} MB"
    )
    print(
        f"memory: build peak {peak / 1e6:.0f} MB traced; tables {tables / 1e6:.0f} MB "
        f"({tables / n:.0f} bytes per item, k={settings.neighbours_k}); a dense items x items "
        f"float32 matrix would be {n * n * 4 / 1e9:.0f} GB"
    )
    print(
        f"items with behaviour neighbours: {summary['items_with_behaviour_neighbours']}, with "
        f"frequently-together rules: {summary['items_with_together_rules']} "
        f"({summary['together_rules']} rules), content terms: {summary['content_terms']}"
    )


if __name__ == "__main__":
    main()
