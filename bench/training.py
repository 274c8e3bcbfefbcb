"""Training time and top-N write time on generated demo data (SQLite, or PostgreSQL).

    python bench/training.py [--scale 1.0] [--epochs 10] [--components 64] [--keep FILE.db]
                             [--database-url postgresql://.../scratch]

``--scale 1`` is the target size: 1M interactions, 50k users, 20k items (training under 2 minutes
on 2 cores; top-50 for 50k users written in under 1 minute). Smaller scales shrink all three
counts together. Generates the demo world with ``recgrpc.jobs.demo``, writes it into a fresh SQLite
file (not timed), then times the phases of ``recgrpc train`` separately and together:

- reading the database (bulk selects) and building features and weights,
- LightFM epochs (each followed by the early-stopping evaluation),
- the whole ``train()`` call (read, fit, evaluate model and trending, store, write top-N),
- writing the top-N of every active user on its own.

The number of epochs is capped with ``--epochs`` so runs are comparable (early stopping may end
sooner); the per-epoch time is printed so other epoch counts can be extrapolated.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from recgrpc.config import Settings
from recgrpc.db import Database, upgrade
from recgrpc.db import model_store as ms
from recgrpc.db import models as m
from recgrpc.db import training_data as td
from recgrpc.jobs.demo import generate_demo, write_demo
from recgrpc.jobs.top_n import write_top_n
from recgrpc.jobs.train import train
from recgrpc.model import artifact
from recgrpc.model.evaluation import temporal_holdout
from recgrpc.model.features import build_interaction_data
from recgrpc.model.representations import ModelView
from recgrpc.model.training import user_rows

FULL_USERS, FULL_ITEMS, FULL_INTERACTIONS = 50_000, 20_000, 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the target size")
    parser.add_argument("--epochs", type=int, default=10, help="maximum epochs")
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--keep", help="write the database to this file and keep it")
    parser.add_argument(
        "--database-url", help="a scratch PostgreSQL database instead of SQLite (filled if empty)"
    )
    args = parser.parse_args()

    n_users = int(FULL_USERS * args.scale)
    n_items = int(FULL_ITEMS * args.scale)
    n_interactions = int(FULL_INTERACTIONS * args.scale)
    tmp = tempfile.TemporaryDirectory()
    path = Path(args.keep) if args.keep else Path(tmp.name) / "bench.db"
    url = args.database_url or f"sqlite:///{path}"
    if args.database_url:
        upgrade(url)
        probe = Database(url)
        with probe.reader() as session:
            filled = bool(session.scalar(select(func.count()).select_from(m.Interaction)))
        probe.dispose()
    else:
        filled = path.exists()
    if filled:
        print(f"using the data already in {url}", file=sys.stderr)
    else:
        started = time.perf_counter()
        data = generate_demo(
            seed=1, n_users=n_users, n_items=n_items, n_interactions=n_interactions
        )
        upgrade(url)
        db = Database(url)
        write_demo(db, data)
        db.dispose()
        print(f"generated and stored in {time.perf_counter() - started:.1f}s (not timed)")
    db = Database(url)
    settings = Settings(database_url=url, components=args.components, epochs=args.epochs)
    print(
        f"scale {args.scale}: {n_users} users, {n_items} items, {n_interactions} interactions; "
        f"{args.components} components, up to {args.epochs} epochs, {os.cpu_count()} CPUs"
    )

    t = time.perf_counter()
    with db.reader() as session:
        rows = td.load_training_rows(session)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    built = build_interaction_data(rows, settings)
    holdout = temporal_holdout(built)
    features_s = time.perf_counter() - t
    print(f"read database          {read_s:7.1f}s  ({len(rows.interactions)} interactions)")
    print(
        f"features and weights   {features_s:7.1f}s  "
        f"({built.pair_user.size} positive pairs, {holdout.n_test} held out)"
    )

    t = time.perf_counter()
    report = train(db, settings, epochs=args.epochs, progress=True, force=True)
    train_s = time.perf_counter() - t
    per_epoch = report.timings.get("fit", 0.0) / max(report.epochs, 1)
    epochs = f"{report.epochs} epochs, best {report.best_epoch}"
    print(f"train() end to end     {train_s:7.1f}s  ({epochs})")
    for phase, seconds in report.timings.items():
        print(f"  {phase:<20} {seconds:7.1f}s")
    print(f"  LightFM per epoch    {per_epoch:7.2f}s")
    print(
        f"  NDCG@10 model {report.model.ndcg:.4f} vs trending {report.trending.ndcg:.4f}"
        f" ({report.model.ndcg / max(report.trending.ndcg, 1e-9):.2f}x)"
    )

    with db.reader() as session:
        stored = ms.active_model(session, ms.RECOMMENDER)
    assert stored is not None
    view = ModelView.build(artifact.decode(stored.artifact), rows.items)
    t = time.perf_counter()
    written = write_top_n(
        db, view, built, user_rows(rows, built), top_n=settings.top_n, now=datetime.now(UTC)
    )
    write_s = time.perf_counter() - t
    with db.reader() as session:
        count = session.scalar(select(func.count()).select_from(m.Recommendation))
    print(f"top-{settings.top_n} write            {write_s:7.1f}s  ({written} users, {count} rows)")
    if args.scale < 1:
        factor = 1 / args.scale
        print(
            f"linear extrapolation to scale 1 (x{factor:.0f}): train() ~{train_s * factor:.0f}s, "
            f"top-N write ~{write_s * factor:.0f}s (LightFM epochs scale with interactions; "
            "scoring with users x items, so the write grows faster than linear)"
        )
    db.dispose()
    tmp.cleanup()


if __name__ == "__main__":
    main()
