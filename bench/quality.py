"""Offline quality on the demo data: the hybrid model against plain LightFM and trending.

    python bench/quality.py [--users 3000] [--items 2000] [--interactions 100000] [--seed 42]
                            [--epochs 30] [--database-url sqlite:///existing.db]

Generates the demo world (``recgrpc.jobs.demo``, deterministic by seed) into a temporary SQLite
file, or reads an existing database, builds one per-user temporal holdout, and scores side by side
on the same users and exclusions:

- hybrid: what ``recgrpc train`` fits (identity + preference/attribute + category/tag features,
  interaction weights by type, time decay, early stopping on holdout NDCG@10),
- plain LightFM: WARP on identity features only, every positive pair weight 1, same epochs
  budget and early stopping (a well-configured pure collaborative baseline),
- trending: time-decayed popularity of the training pairs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import sparse

from recgrpc.config import Settings
from recgrpc.db import Database, upgrade
from recgrpc.db import training_data as td
from recgrpc.jobs.demo import generate_demo, write_demo
from recgrpc.model.evaluation import (
    Holdout,
    Metrics,
    constant_scores,
    evaluate,
    sample_users,
    temporal_holdout,
    trending_baseline,
)
from recgrpc.model.features import InteractionData, build_interaction_data
from recgrpc.model.recommender import HybridRecommender, TrainingParams
from recgrpc.model.training import metrics_table


def fit(
    data: InteractionData,
    holdout: Holdout,
    *,
    identity_only: bool,
    epochs: int,
    params: TrainingParams,
) -> tuple[Metrics, int, float]:
    shape = (data.n_users, data.n_items)
    if identity_only:
        user_features = sparse.identity(data.n_users, dtype=np.float32, format="csr")
        item_features = sparse.identity(data.n_items, dtype=np.float32, format="csr")
        user_names, item_names = data.user_ids, data.item_ids
        weights = None
    else:
        user_features, item_features = data.user_features, data.item_features
        user_names, item_names = data.user_feature_names, data.item_feature_names
        w = holdout.train_weight / holdout.train_weight.mean()
        weights = sparse.coo_matrix((w, (holdout.train_user, holdout.train_item)), shape=shape)
    rec = HybridRecommender(
        params,
        data.user_ids,
        data.item_ids,
        user_feature_names=user_names,
        item_feature_names=item_names,
        item_features=item_features,
        user_features=user_features,
    )
    interactions = sparse.coo_matrix(
        (np.ones(holdout.n_train, dtype=np.float32), (holdout.train_user, holdout.train_item)),
        shape=shape,
    )
    stopping = sample_users(holdout.users, 1000)
    best, best_epoch, best_state, waited = -1.0, 0, None, 0
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        rec.fit_partial(interactions, weights, epochs=1)
        ndcg = evaluate(rec.scores, holdout, users=stopping, with_auc=False).ndcg
        if ndcg > best + 1e-5:
            best, best_epoch, best_state, waited = ndcg, epoch, rec.snapshot_state(), 0
        else:
            waited += 1
            if waited >= 3:
                break
    seconds = time.perf_counter() - started
    assert best_state is not None
    rec.restore_state(best_state)
    final = sample_users(holdout.users, 3000, seed=1)
    return evaluate(rec.scores, holdout, users=final), best_epoch, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--database-url", help="evaluate this database instead of the demo")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    url = args.database_url
    if url is None:
        url = f"sqlite:///{Path(tmp.name) / 'quality.db'}"
        upgrade(url)
        db = Database(url)
        data = generate_demo(
            seed=args.seed,
            n_users=args.users,
            n_items=args.items,
            n_interactions=args.interactions,
        )
        write_demo(db, data)
        print(
            f"demo seed {args.seed}: {args.users} users, {args.items} items, "
            f"{args.interactions} interactions"
        )
    else:
        db = Database(url)
    settings = Settings(database_url=url)
    with db.reader() as session:
        rows = td.load_training_rows(session)
    db.dispose()
    built = build_interaction_data(rows, settings)
    holdout = temporal_holdout(built)
    params = TrainingParams(
        loss=settings.loss,
        components=settings.components,
        learning_rate=settings.learning_rate,
    )
    hybrid, hybrid_epoch, hybrid_s = fit(
        built, holdout, identity_only=False, epochs=args.epochs, params=params
    )
    plain, plain_epoch, plain_s = fit(
        built, holdout, identity_only=True, epochs=args.epochs, params=params
    )
    trending = evaluate(
        constant_scores(
            trending_baseline(holdout, built.n_items, settings.trending_half_life_days)
        ),
        holdout,
        users=sample_users(holdout.users, 3000, seed=1),
    )
    print(
        f"holdout: {holdout.n_test} pairs of {holdout.users.size} users; "
        f"hybrid best epoch {hybrid_epoch} ({hybrid_s:.1f}s), "
        f"plain LightFM best epoch {plain_epoch} ({plain_s:.1f}s)"
    )
    print(metrics_table([("hybrid", hybrid), ("plain LightFM", plain), ("trending", trending)]))
    print(f"NDCG@10 hybrid / plain LightFM: {hybrid.ndcg / max(plain.ndcg, 1e-9):.2f}x")
    tmp.cleanup()


if __name__ == "__main__":
    main()
