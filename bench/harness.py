"""Benchmark harness: ``python bench/harness.py --help``, or ``recgrpc bench`` in a checkout.

``grpc.health.v1.Health/Check`` is the ceiling of the Python gRPC stack on this machine (an
almost empty handler on the same server, in the same run), so every figure is also reported as a
ratio to it.

One run: seed a database with generated data, start ``recgrpc serve`` as a subprocess on a
loopback port, and drive it from separate load-generating processes (each with its own channel
and asyncio event loop):

- closed loop at each concurrency level (every in-flight slot sends its next request as soon as
  the previous one is answered): throughput and latency percentiles;
- open loop at a fixed offered rate: latency measured from each request's *scheduled* send time,
  so a stalled server cannot hide its queueing delay (no coordinated omission).

Before measuring an RPC it is warmed up: each load process first sends every distinct request
it will draw from once (so GetRecommendations' users have their contexts cached, "warm"), then
``--warmup`` seconds of load (``--no-prime`` for the time alone).

Prints a table, writes JSON and a PNG plot (latency against throughput) under ``bench/results``.
Benchmarks print numbers; they are not tests.

The harness is the repository's, not the installed package's: ``recgrpc bench`` imports it from
the checkout it was installed from (``recgrpc.bench_command``). ``harness_load`` seeds and drives
the server, ``harness_report`` summarises.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness_load import (
    HEALTH,
    RPC_PATHS,
    LoadGenerators,
    LoadSpec,
    ServerProcess,
    request_ids,
    seed_database,
    train_models,
)
from harness_options import build_parser
from harness_report import (
    Measurement,
    churn_available,
    plot,
    print_table,
    ratios,
    summarise,
)

from recgrpc.db import normalise_url


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def run(args: argparse.Namespace) -> int:
    """Seed, serve, measure, report. Returns a process exit code."""
    with tempfile.TemporaryDirectory(prefix="recgrpc-bench-") as scratch:
        url = args.bench_database_url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        return _run(args, url)


def _run(args: argparse.Namespace, url: str) -> int:
    backend = normalise_url(url).get_backend_name()
    rpcs = [r.strip() for r in args.rpcs.split(",") if r.strip()]
    unknown = [r for r in rpcs if r not in RPC_PATHS or r == HEALTH]
    if unknown:
        print(f"unknown RPC(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    levels = _ints(args.concurrency)
    processes = max(1, args.processes)
    t0 = time.monotonic()
    print(f"seeding {backend}: {args.items} items, {args.users} users, {args.events} events")
    seed_database(url, args.items, args.users, args.events)
    print(f"seeded in {time.monotonic() - t0:.1f}s")
    if not args.no_train:
        train_models(url)
    users, items = request_ids(url)
    measurements: list[Measurement] = []
    for workers in _ints(args.server_workers):
        server = ServerProcess(url, workers)
        generators: LoadGenerators | None = None
        try:
            server.wait_serving()
            present = [
                r for r in rpcs if r != "PredictChurn" or churn_available(server.target, users[0])
            ]
            generators = LoadGenerators(server.target, processes, args.connections)
            plan = Plan(levels, processes, workers, users, items, server.proc.pid)
            measurements.extend(_measure(args, generators, present, plan))
        finally:
            if generators is not None:
                generators.close()
            server.stop()
    ratio_rows = ratios(measurements)
    print()
    print(f"backend={backend} items={args.items} processes={processes} cores={os.cpu_count()}")
    print_table(measurements, ratio_rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{backend}-{args.items}" + (f"-{args.label}" if args.label else "")
    report = {
        "backend": backend,
        "items": args.items,
        "users": args.users,
        "events": args.events,
        "load_processes": processes,
        "connections_per_process": args.connections,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "started": stamp,
        "measurements": [asdict(m) for m in measurements],
        "ratios_vs_health": ratio_rows,
    }
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out / f'{name}.json'}")
    title = f"recgrpc on {backend}, {args.items} items, {os.cpu_count()} cores"
    if plot(measurements, out / f"{name}.png", title):
        print(f"wrote {out / f'{name}.png'}")
    return 0


@dataclass(frozen=True)
class Plan:
    """What one server (with ``workers`` processes) is measured with."""

    levels: Sequence[int]
    processes: int
    workers: int
    users: tuple[str, ...]
    items: tuple[str, ...]
    server_pid: int


def process_tree_cpu(pid: int) -> float | None:
    """CPU seconds used so far by ``pid`` and its children (Linux /proc; None elsewhere)."""
    proc = Path("/proc")
    try:
        children = (proc / str(pid) / "task" / str(pid) / "children").read_text().split()
        total = 0
        for one in (str(pid), *children):
            fields = (proc / one / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def _measure(
    args: argparse.Namespace, generators: LoadGenerators, rpcs: Sequence[str], plan: Plan
) -> list[Measurement]:
    processes, workers = plan.processes, plan.workers

    def specs(
        rpc: str, mode: str, level: int, duration: float, prime: bool = False
    ) -> list[LoadSpec]:
        # Closed loop: spread ``level`` slots over at most ``level`` processes; open loop: split
        # the offered rate over all of them.
        active = min(processes, level) if mode == "closed" else processes
        start_at = time.time() + 0.2
        return [
            LoadSpec(
                rpc=rpc,
                mode=mode,
                concurrency=level // active + (1 if i < level % active else 0),
                rate=args.rate / active,
                duration=duration,
                max_requests=max(1, args.max_requests // active),
                start_at=start_at,
                users=plan.users,
                items=plan.items,
                prime=prime,
            )
            for i in range(active)
        ]

    def report(m: Measurement) -> None:
        where = (
            f"closed c={m.concurrency:<3}" if m.mode == "closed" else f"open {m.offered_rate:.0f}/s"
        )
        errors = f"  errors {m.errors}" if m.errors else ""
        cpu = f"  server cpu {m.server_cpu_ms:.3f} ms/req" if m.server_cpu_ms is not None else ""
        print(
            f"  workers={workers} {where} {m.rpc:<20} {m.throughput:8.1f} req/s"
            f"  p99 {m.p99_ms:7.2f} ms{cpu}{errors}"
        )

    def measure(batch: list[LoadSpec]) -> Measurement:
        cpu_before = process_tree_cpu(plan.server_pid)
        m = summarise(batch, generators.run(batch), workers)
        cpu_after = process_tree_cpu(plan.server_pid)
        if cpu_before is not None and cpu_after is not None and m.requests:
            m.server_cpu_ms = round((cpu_after - cpu_before) * 1000.0 / m.requests, 3)
        report(m)
        return m

    results: list[Measurement] = []
    everything = [HEALTH, *rpcs]
    for rpc in everything:
        # Warm: each worker's distinct requests served once (users' contexts cached), then
        # ``--warmup`` seconds of load.
        generators.run(specs(rpc, "closed", 8, args.warmup, prime=not args.no_prime))
    for level in plan.levels:
        results.extend(measure(specs(rpc, "closed", level, args.duration)) for rpc in everything)
    if not args.no_open_loop:
        results.extend(measure(specs(rpc, "open", 0, args.duration)) for rpc in everything)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
