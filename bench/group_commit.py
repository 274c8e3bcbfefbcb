"""LogInteraction's group commit on its own: events stored per second and CPU per event.

    python bench/group_commit.py [--db URL] [--threads 1,8,32] [--writers 1] [--seconds 4]

Seeds the demo world (a temporary SQLite file unless ``--db`` is given), then for each thread
count has that many threads log fresh events through one ``InteractionWriter`` for a few seconds,
each waiting for its event's commit as an RPC thread does. No gRPC: this isolates what a batch
costs in the database and in Python. Prints events/s and process CPU per event.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from harness_load import seed_database  # bench/, beside this script
from sqlalchemy import select

from recgrpc import domain
from recgrpc.db import Database
from recgrpc.db import models as m
from recgrpc.server.group_commit import InteractionWriter


def measure(
    db: Database, users: list[str], items: list[str], threads: int, writers: int, seconds: float
) -> tuple[float, float]:
    catalogued = frozenset(items)
    writer = InteractionWriter(db, writers=writers, catalogued=lambda: catalogued)
    stored = [0] * threads
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < stop:
            writer.log(
                domain.Interaction(
                    event_id=str(uuid.uuid4()),
                    user_id=rng.choice(users),
                    item_id=rng.choice(items),
                    type=domain.InteractionType.VIEW,
                    occurred_at=datetime.now(UTC),
                )
            )
            stored[n] += 1

    cpu = time.process_time()
    started = time.monotonic()
    pool = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    writer.close()
    total = sum(stored)
    return total / elapsed, cpu / total * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="", help="database URL (default: a temporary SQLite)")
    parser.add_argument("--threads", default="1,8,32")
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        seed_database(url, items=10_000, users=2_000, events=50_000)
        db = Database(url)
        with db.reader() as session:
            users = list(session.scalars(select(m.User.user_id)))
            items = list(session.scalars(select(m.Item.item_id)))
        print(f"{db.url.get_backend_name()}, {args.writers} writer thread(s)")
        print(f"{'threads':>8} {'events/s':>10} {'cpu ms/event':>13}")
        for threads in (int(t) for t in args.threads.split(",")):
            rate, cpu_ms = measure(db, users, items, threads, args.writers, args.seconds)
            print(f"{threads:>8} {rate:>10.0f} {cpu_ms:>13.3f}")
        db.dispose()


if __name__ == "__main__":
    main()
