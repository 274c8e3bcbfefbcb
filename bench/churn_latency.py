"""PredictChurn latency through the gRPC server on PostgreSQL with a large history.

    python bench/churn_latency.py --database-url postgresql://user@host/empty_db \
        [--interactions 1000000] [--users 30000] [--requests 2000] [--reuse]

Loads the demo world (planted churners) of the given size into an EMPTY database (or, with
--reuse, uses what an earlier run loaded), trains the churn model (printing its metrics
beside the recency-only baseline and the training time), starts a real server on a free port
and times PredictChurn for random users one call at a time from a client in this process:
validation, the indexed per-user feature queries, tree scoring with factors, recording the
prediction and the commit. Prints p50/p90/p99/max beside the same call in process (and its
thread CPU time) and a health check (the floor of a gRPC call on this machine now), and the
query plan of the per-user statement, to show it reads the users' index ranges, not tables.

Add --skip-training to reuse the active churn model of an earlier run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, select, text

from recgrpc.config import Settings
from recgrpc.db import Database, churn_data, upgrade
from recgrpc.db import models as m
from recgrpc.jobs import churn_training as churn
from recgrpc.jobs.demo import generate_demo, write_demo
from recgrpc.server import create_server
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc


def load(db: Database, args: argparse.Namespace) -> None:
    with db.reader() as session:
        stored = session.scalar(select(func.count()).select_from(m.Interaction)) or 0
    if stored and args.reuse:
        print(f"reusing {stored} stored interactions")
        return
    if stored:
        raise SystemExit("the database is not empty: use an empty one, or --reuse its data")
    started = time.perf_counter()
    data = generate_demo(
        seed=args.seed,
        n_users=args.users,
        n_items=args.items,
        n_interactions=args.interactions,
    )
    report = write_demo(db, data)
    print(
        f"loaded {report.interactions} interactions, {report.users} users, "
        f"{report.impressions} impressions, {report.new_feedback} feedback "
        f"in {time.perf_counter() - started:.1f}s"
    )


def explain_user_query(db: Database, user_id: str, as_of: datetime) -> str:
    """EXPLAIN ANALYZE of the per-user aggregates statement PredictChurn runs."""
    with db.reader() as session:
        statement, params = churn_data.aggregates_query(session, as_of, [user_id])
        compiled = statement.params(params).compile(
            dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        rows = session.execute(text(f"EXPLAIN ANALYZE {compiled}")).scalars().all()
    return "\n".join(f"    {row}" for row in rows)


def percentile(sorted_values: list[float], share: float) -> float:
    index = min(len(sorted_values) - 1, round(share * (len(sorted_values) - 1)))
    return sorted_values[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="an empty PostgreSQL database")
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reuse", action="store_true", help="use the data already loaded")
    parser.add_argument(
        "--skip-training", action="store_true", help="serve the active churn model as it is"
    )
    args = parser.parse_args()

    upgrade(args.database_url)
    db = Database(args.database_url)
    if db.is_sqlite:
        print("note: the latency target is for PostgreSQL; this run uses SQLite")
    load(db, args)
    with db.writer() as session:
        session.execute(text("ANALYZE"))
    with db.reader() as session:
        as_of = churn.default_as_of(session, datetime.now(UTC))
        users = list(session.scalars(select(m.Interaction.user_id).distinct()))
        interactions = session.scalar(select(func.count()).select_from(m.Interaction))

    if not args.skip_training:
        started = time.perf_counter()
        report = churn.train_churn(db, as_of=as_of, horizon_days=30)
        print(f"\ntrained in {time.perf_counter() - started:.1f}s")
        print(churn.format_report(report))

    # The periodic snapshot refresh (trending over every recent event) is another feature's
    # cost; it runs once at start-up here so the numbers are PredictChurn's own.
    settings = Settings(
        database_url=args.database_url,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        refresh_seconds=3600,
    )
    server = create_server(settings)
    try:
        server.wait_ready(60)
        rng = random.Random(args.seed)
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(as_of)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.RecommendationServiceStub(channel)
            for user_id in rng.sample(users, min(200, len(users))):  # warm-up
                stub.PredictChurn(pb.PredictChurnRequest(user_id=user_id, as_of=stamp), timeout=10)
            health = health_pb2_grpc.HealthStub(channel)
            timings: dict[str, list[float]] = {"grpc": [], "handler": [], "cpu": [], "health": []}
            levels: dict[int, int] = {}
            for _ in range(args.requests):
                user_id = rng.choice(users)
                request = pb.PredictChurnRequest(user_id=user_id, as_of=stamp)
                begin = time.perf_counter()
                response = stub.PredictChurn(request, timeout=10)
                timings["grpc"].append((time.perf_counter() - begin) * 1000)
                levels[response.risk_level] = levels.get(response.risk_level, 0) + 1
                # Side by side: the same work without gRPC, and a gRPC call doing no work.
                begin, cpu = time.perf_counter(), time.thread_time()
                server.handlers.predict_churn(user_id, as_of)
                timings["handler"].append((time.perf_counter() - begin) * 1000)
                timings["cpu"].append((time.thread_time() - cpu) * 1000)
                begin = time.perf_counter()
                health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                timings["health"].append((time.perf_counter() - begin) * 1000)
    finally:
        server.stop(grace=1)
    if not db.is_sqlite:
        print("\nplan of the per-user aggregates statement:")
        print(explain_user_query(db, users[0], as_of))
    db.dispose()

    print(
        f"\nPredictChurn, {db.url.get_backend_name()}, {interactions} interactions, "
        f"{len(users)} users, {args.requests} sequential calls each (as_of {as_of:%Y-%m-%d %H:%M}),"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:"
    )
    print(f"{'':<34}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'mean':>8}  ms")
    for key, label in (
        ("grpc", "PredictChurn over gRPC"),
        ("handler", "same, in process (no gRPC)"),
        ("cpu", "  its CPU time in this thread"),
        ("health", "health Check over gRPC (floor)"),
    ):
        ordered = sorted(timings[key])
        print(
            f"{label:<34}{percentile(ordered, 0.5):>8.2f}{percentile(ordered, 0.9):>8.2f}"
            f"{percentile(ordered, 0.99):>8.2f}{ordered[-1]:>8.2f}"
            f"{statistics.fmean(ordered):>8.2f}"
        )
    names = {v: k.removeprefix("RISK_LEVEL_") for k, v in pb.RiskLevel.items()}
    print("levels served: " + ", ".join(f"{names[k]} {v}" for k, v in sorted(levels.items())))


if __name__ == "__main__":
    main()
