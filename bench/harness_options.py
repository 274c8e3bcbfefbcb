"""The benchmark harness's options, shared by ``python bench/harness.py`` and ``recgrpc bench``.

Kept apart from the harness so ``recgrpc --help`` lists them without importing the harness.
"""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recgrpc bench",
        description="Throughput and latency of every RPC beside the gRPC health check.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The harness's options (shared by ``recgrpc bench`` and ``bench/harness.py``)."""
    parser.add_argument(
        "--bench-database-url",
        "--db",
        dest="bench_database_url",
        default="",
        help="database to seed and serve from (default: a temporary SQLite file)",
    )
    parser.add_argument("--items", type=int, default=10_000, help="catalogue size")
    parser.add_argument(
        "--users", type=int, default=2_000, help="users in the generated demo world"
    )
    parser.add_argument(
        "--events", type=int, default=50_000, help="interactions in the generated demo world"
    )
    parser.add_argument(
        "--rpcs",
        default="GetRecommendations,LogInteraction,SubmitFeedback,PredictChurn",
        help="comma-separated RPCs to measure (the health check is always measured)",
    )
    parser.add_argument("--concurrency", default="1,8,32", help="closed-loop levels (total)")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop offered req/s")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per RPC")
    parser.add_argument(
        "--no-prime",
        action="store_true",
        help="warm up by time only, not also by sending each load process's requests once",
    )
    parser.add_argument(
        "--max-requests", type=int, default=50_000, help="cap per measurement (all processes)"
    )
    parser.add_argument("--processes", type=int, default=2, help="load-generating processes")
    parser.add_argument(
        "--connections", type=int, default=4, help="TCP connections per load process"
    )
    parser.add_argument(
        "--server-workers",
        default="1",
        help="`recgrpc serve --workers` values to compare, e.g. 1,2",
    )
    parser.add_argument("--no-open-loop", action="store_true", help="skip the fixed-rate runs")
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="do not train models first (GetRecommendations then serves trending)",
    )
    parser.add_argument("--out", default="bench/results", help="directory for JSON and PNG")
    parser.add_argument("--label", default="", help="name for the result files")
