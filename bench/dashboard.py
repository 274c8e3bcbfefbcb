"""Render time of every dashboard page at 10k items / 100k events (the issue's target: 300 ms).

    python bench/dashboard.py [--database-url URL] [--items 10000] [--users 3000]
                              [--interactions 100000] [--requests 20] [--reuse]

Seeds the database like `make run` (``recgrpc demo``, ``train --epochs 3``, ``train-churn``,
``score-churn``: the demo generator, both models, every user's churn risk), then starts a real
server and dashboard on free ports and times sequential GETs of each page over HTTP (the whole
page: database reads, ranking, churn scoring, templates). Without ``--database-url`` a fresh
SQLite file is used; a PostgreSQL URL must name an empty, migrated database (or pass
``--reuse`` to time one this script seeded before). Wall-clock times include waiting for a CPU
on a busy machine: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import os
import statistics
import tempfile
import time

from sqlalchemy import func, select

from recgrpc import cli
from recgrpc.config import Settings
from recgrpc.dashboard import DashboardServer
from recgrpc.db import Database, upgrade
from recgrpc.db import models as m
from recgrpc.db.queries import count_rows
from recgrpc.server import create_server

TARGET_MS = 300.0


def seed(url: str, users: int, items: int, interactions: int) -> None:
    """What `make run` does, through the same commands."""
    started = time.perf_counter()
    sizes = ["--users", str(users), "--items", str(items), "--interactions", str(interactions)]
    for command in (["demo", *sizes], ["train", "--epochs", "3"], ["train-churn"], ["score-churn"]):
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["--database-url", url, "--log-level", "WARNING", *command]) == 0
    print(f"seeded in {time.perf_counter() - started:.0f} s")


def fetch(port: int, path: str) -> tuple[int, float, float]:
    """(status, wall ms, CPU ms of this process: the dashboard's thread and the client's)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        wall = (time.perf_counter() - started) * 1000
        return response.status, wall, (time.process_time() - cpu) * 1000
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=3_000)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="time an already seeded database")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/dashboard-bench.db"
    upgrade(url)
    db = Database(url)
    with db.reader() as session:
        present = count_rows(session, m.Interaction)
    if present and not args.reuse:
        raise SystemExit("the database is not empty: pass an empty one, or --reuse")
    if not present:
        seed(url, args.users, args.items, args.interactions)
    with db.reader() as session:
        sizes = {t.__tablename__: count_rows(session, t) for t in (m.Item, m.User, m.Interaction,
                 m.Impression, m.Feedback, m.ChurnPrediction, m.ModelArtifact)}  # fmt: skip
        busy_user = session.execute(
            select(m.Interaction.user_id).group_by(m.Interaction.user_id)
            .order_by(func.count().desc()).limit(1)
        ).scalar_one()  # fmt: skip
        busy_item = session.execute(
            select(m.Interaction.item_id).group_by(m.Interaction.item_id)
            .order_by(func.count().desc()).limit(1)
        ).scalar_one()  # fmt: skip
    db.dispose()
    print(f"database {url.split('://')[0]}: {sizes}")
    settings = Settings(database_url=url, host="127.0.0.1", port=0, metrics_port=0)
    server = create_server(settings)
    assert server.wait_ready(120), "server never became ready"
    dashboard = DashboardServer(server.handlers, "127.0.0.1", 0)
    pages = {
        "overview": "/",
        "models": "/models",
        "user inspector": f"/users?user_id={busy_user}",
        "user inspector (unknown)": "/users?user_id=nobody-at-all",
        "item inspector": f"/items?item_id={busy_item}",
    }
    try:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'page':<26}{'median ms':>10}{'p90 ms':>9}{'cpu ms':>9}  (of {args.requests})")
        for name, path in pages.items():
            status, *_ = fetch(dashboard.port, path)  # warm-up: templates compiled
            assert status in (200, 404), (path, status)
            runs = [fetch(dashboard.port, path) for _ in range(args.requests)]
            wall = sorted(r[1] for r in runs)
            cpu = statistics.median(r[2] for r in runs)
            p90 = wall[min(len(wall) - 1, int(0.9 * len(wall)))]
            median = statistics.median(wall)
            verdict = "ok" if median < TARGET_MS else f"over {TARGET_MS:.0f} ms"
            print(f"{name:<26}{median:>10.1f}{p90:>9.1f}{cpu:>9.1f}  {verdict}")
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        dashboard.close()
        server.stop(grace=1)


if __name__ == "__main__":
    main()
