"""Benchmark harness (``recgrpc bench``): every RPC measured beside the gRPC health check.

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

Prints a table, writes JSON and a PNG plot (latency against throughput) under ``bench/results``.
Benchmarks print numbers; they are not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from recgrpc.db import Database, models, normalise_url, queries, upgrade
from recgrpc.jobs.demo import generate_demo, write_demo
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc

CLI = (sys.executable, "-m", "recgrpc.cli")
HEALTH = "Health/Check"
RPC_PATHS = {
    HEALTH: "/grpc.health.v1.Health/Check",
    "GetRecommendations": "/recgrpc.v1.RecommendationService/GetRecommendations",
    "LogInteraction": "/recgrpc.v1.RecommendationService/LogInteraction",
    "SubmitFeedback": "/recgrpc.v1.RecommendationService/SubmitFeedback",
    "PredictChurn": "/recgrpc.v1.RecommendationService/PredictChurn",
    "SearchItems": "/recgrpc.v1.RecommendationService/SearchItems",
    "GetUserStats": "/recgrpc.v1.RecommendationService/GetUserStats",
    "ListInteractions": "/recgrpc.v1.RecommendationService/ListInteractions",
    "ListChurnPredictions": "/recgrpc.v1.RecommendationService/ListChurnPredictions",
}
# SearchItems' queries: words of the demo's titles and categories, one to three at a time,
# half of them for a user (re-ranked and recorded), and a few that match nothing.
SEARCH_WORDS = ["jazz", "guide", "live", "rock", "classical", "documentary", "hiking", "quiet"]
CATEGORIES = [f"category-{i:02d}" for i in range(24)]
TAGS = [f"tag-{i:03d}" for i in range(80)]
EVENT_TYPES = ["VIEW"] * 12 + ["CLICK"] * 5 + ["LIKE", "ADD_TO_CART", "PURCHASE", "SHARE"]


# -- generated data ---------------------------------------------------------------------------


def seed_database(url: str, items: int, users: int, events: int, seed: int = 7) -> None:
    """Migrate and fill ``url`` with the demo world (skipped when it already holds that much)."""
    upgrade(url)
    db = Database(url)
    try:
        with db.reader() as session:
            have_items = queries.count_rows(session, models.Item)
            have_events = queries.count_rows(session, models.Interaction)
        if have_items < items or have_events < events:
            data = generate_demo(seed, n_users=users, n_items=items, n_interactions=events)
            write_demo(db, data)
    finally:
        db.dispose()


def train_models(url: str) -> None:
    """Train the recommender and the churn model (``recgrpc train``, ``train-churn``) unless
    active ones exist, so GetRecommendations is measured warm and PredictChurn can answer."""
    db = Database(url)
    try:
        with db.reader() as session:
            active = set(
                session.scalars(
                    select(models.ModelArtifact.kind).where(models.ModelArtifact.status == "active")
                )
            )
    finally:
        db.dispose()
    for kind, command in (("recommender", "train"), ("churn", "train-churn")):
        if kind in active:
            continue
        started = time.monotonic()
        done = subprocess.run(
            [*CLI, "--log-level", "WARNING", "--database-url", url, command],
            capture_output=True,
            text=True,
            check=False,
        )
        outcome = "ok" if done.returncode == 0 else f"failed ({done.stderr.strip()[-200:]})"
        print(f"recgrpc {command}: {outcome} in {time.monotonic() - started:.1f}s")


def request_ids(url: str, limit: int = 5000) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(users with history, active items) to build requests from."""
    db = Database(url)
    try:
        with db.reader() as session:
            users = session.scalars(
                select(models.Interaction.user_id)
                .distinct()
                .order_by(models.Interaction.user_id)
                .limit(limit)
            )
            items = session.scalars(
                select(models.Item.item_id)
                .where(models.Item.active.is_(True))
                .order_by(models.Item.item_id)
            )
            return tuple(users), tuple(items)
    finally:
        db.dispose()


# -- load generation (runs in separate processes) ---------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """One measurement, split evenly over the load processes."""

    rpc: str
    mode: str  # "closed" or "open"
    concurrency: int  # in-flight requests per process (closed loop)
    rate: float  # requests/s per process (open loop)
    duration: float
    max_requests: int  # per process
    start_at: float  # wall-clock time all processes start together
    users: tuple[str, ...]
    items: tuple[str, ...]


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, OK answers only
    codes: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0


def request_maker(
    rpc: str, users: Sequence[str], items: Sequence[str], worker: int
) -> Callable[[], bytes]:
    """Serialized request bodies; pre-built where they may repeat, fresh where ids must differ."""
    rng = random.Random(worker * 7919 + len(rpc))
    if rpc == HEALTH:
        body = health_pb2.HealthCheckRequest().SerializeToString()
        return lambda: body
    if rpc == "LogInteraction":
        prefix = f"bench-{uuid.uuid4().hex[:12]}-"
        counter = iter(range(1 << 62))

        def log_interaction() -> bytes:
            return pb.LogInteractionRequest(
                event_id=f"{prefix}{next(counter)}",
                user_id=rng.choice(users),
                item_id=rng.choice(items),
                type=pb.INTERACTION_TYPE_VIEW,
            ).SerializeToString()

        return log_interaction
    pool: list[bytes] = []
    for _ in range(512):
        uid = rng.choice(users)
        if rpc == "GetRecommendations":
            pool.append(pb.GetRecommendationsRequest(user_id=uid, limit=10).SerializeToString())
        elif rpc == "SubmitFeedback":
            pool.append(
                pb.SubmitFeedbackRequest(
                    user_id=uid, item_id=rng.choice(items), clicked=True
                ).SerializeToString()
            )
        elif rpc == "PredictChurn":
            pool.append(pb.PredictChurnRequest(user_id=uid).SerializeToString())
        elif rpc == "SearchItems":
            words = rng.sample(SEARCH_WORDS, rng.randint(1, 3)) if rng.random() > 0.05 else ["zq"]
            pool.append(
                pb.SearchItemsRequest(
                    query=" ".join(words), limit=10, user_id=uid if rng.random() < 0.5 else ""
                ).SerializeToString()
            )
        elif rpc == "GetUserStats":
            pool.append(pb.GetUserStatsRequest(user_id=uid).SerializeToString())
        elif rpc == "ListInteractions":
            pool.append(pb.ListInteractionsRequest(user_id=uid, page_size=50).SerializeToString())
        elif rpc == "ListChurnPredictions":
            pool.append(pb.ListChurnPredictionsRequest(user_id=uid).SerializeToString())
        else:
            raise ValueError(f"unknown RPC {rpc!r}")
    return lambda: rng.choice(pool)


async def _run_spec(channels: Sequence[Any], spec: LoadSpec, worker: int) -> LoadResult:
    calls = [channel.unary_unary(RPC_PATHS[spec.rpc]) for channel in channels]
    make = request_maker(spec.rpc, spec.users, spec.items, worker)
    result = LoadResult()
    codes: Counter[str] = Counter()
    latencies = result.latencies
    clock = time.perf_counter

    async def send(call: Any, body: bytes, since: float) -> None:
        try:
            await call(body, timeout=30)
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
        else:
            codes["OK"] += 1
            latencies.append(clock() - since)

    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    begin = clock()
    deadline = begin + spec.duration
    if spec.mode == "closed":
        sent = 0

        async def slot(call: Any) -> None:
            nonlocal sent
            while sent < spec.max_requests and clock() < deadline:
                sent += 1
                await send(call, make(), clock())

        await asyncio.gather(*(slot(calls[i % len(calls)]) for i in range(spec.concurrency)))
    else:
        interval = 1.0 / spec.rate
        total = min(spec.max_requests, int(spec.duration * spec.rate))
        pending = []
        for i in range(total):
            scheduled = begin + i * interval
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            call = calls[i % len(calls)]
            pending.append(asyncio.ensure_future(send(call, make(), scheduled)))
        await asyncio.gather(*pending)
    result.elapsed = clock() - begin
    result.codes = dict(codes)
    return result


async def _worker_loop(conn: Connection, target: str, worker: int, connections: int) -> None:
    loop = asyncio.get_running_loop()
    # A local subchannel pool gives each channel its own TCP connection; with several, the
    # kernel's SO_REUSEPORT hashing spreads them over `serve --workers` processes.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    try:
        while True:
            spec: LoadSpec | None = await loop.run_in_executor(None, conn.recv)
            if spec is None:
                return
            conn.send(await _run_spec(channels, spec, worker))
    finally:
        for channel in channels:
            await channel.close(None)


def load_process(conn: Connection, target: str, worker: int, connections: int) -> None:
    """Entry point of one load-generating process: runs the specs it is sent until None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_worker_loop(conn, target, worker, connections))


class LoadGenerators:
    """N load processes (spawned: no gRPC state is inherited) driven over pipes."""

    def __init__(self, target: str, processes: int, connections: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for worker in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=load_process, args=(child, target, worker, connections), daemon=True
            )
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, specs: Sequence[LoadSpec]) -> LoadResult:
        """Run ``specs[i]`` in process ``i`` (fewer specs leave the other processes idle)."""
        for conn, spec in zip(self.conns, specs, strict=False):
            conn.send(spec)
        merged = LoadResult()
        codes: Counter[str] = Counter()
        for conn in self.conns[: len(specs)]:
            part: LoadResult = conn.recv()
            merged.latencies.extend(part.latencies)
            codes.update(part.codes)
            merged.elapsed = max(merged.elapsed, part.elapsed)
        merged.codes = dict(codes)
        return merged

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()


# -- the server under test --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``recgrpc serve`` in a subprocess on a loopback port; stopped with SIGTERM (drain)."""

    def __init__(self, url: str, workers: int) -> None:
        self.port = free_port()
        command = [
            *CLI,
            "--database-url",
            url,
            "--log-level",
            "WARNING",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-port",
            "0",
            "--workers",
            str(workers),
        ]
        self.proc = subprocess.Popen(command)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode}")
            with grpc.insecure_channel(self.target) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=2
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
            time.sleep(0.3)
        raise RuntimeError("server did not become SERVING in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- measurement and reporting ----------------------------------------------------------------


@dataclass
class Measurement:
    rpc: str
    mode: str
    workers: int
    concurrency: int
    offered_rate: float
    requests: int
    errors: dict[str, int]
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu_ms: float | None = None  # server CPU time per answered request (all workers)


def summarise(specs: Sequence[LoadSpec], result: LoadResult, workers: int) -> Measurement:
    ok = len(result.latencies)
    pct = (
        np.percentile(np.asarray(result.latencies) * 1000.0, [50, 95, 99])
        if ok
        else np.full(3, float("nan"))
    )
    spec = specs[0]
    return Measurement(
        rpc=spec.rpc,
        mode=spec.mode,
        workers=workers,
        concurrency=sum(s.concurrency for s in specs) if spec.mode == "closed" else 0,
        offered_rate=sum(s.rate for s in specs) if spec.mode == "open" else 0.0,
        requests=ok,
        errors={k: v for k, v in result.codes.items() if k != "OK"},
        seconds=round(result.elapsed, 3),
        throughput=round(ok / result.elapsed, 1) if result.elapsed else 0.0,
        p50_ms=round(float(pct[0]), 3),
        p95_ms=round(float(pct[1]), 3),
        p99_ms=round(float(pct[2]), 3),
    )


def churn_available(target: str, user: str) -> bool:
    """PredictChurn answers UNAVAILABLE until a churn model has been trained."""
    with grpc.insecure_channel(target) as channel:
        stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)
        try:
            stub.PredictChurn(pb.PredictChurnRequest(user_id=user), timeout=10)
        except grpc.RpcError as exc:
            print(f"PredictChurn skipped: {exc.code().name} ({exc.details()})")
            return False
    return True


def ratios(measurements: Sequence[Measurement]) -> list[dict[str, Any]]:
    """Each RPC against the health check measured at the same level, workers and mode."""
    ceiling = {
        (m.mode, m.workers, m.concurrency, m.offered_rate): m
        for m in measurements
        if m.rpc == HEALTH
    }
    rows = []
    for m in measurements:
        base = ceiling.get((m.mode, m.workers, m.concurrency, m.offered_rate))
        if m.rpc == HEALTH or base is None or not base.throughput:
            continue
        rows.append(
            {
                "rpc": m.rpc,
                "mode": m.mode,
                "workers": m.workers,
                "concurrency": m.concurrency,
                "offered_rate": m.offered_rate,
                "throughput_vs_health": round(m.throughput / base.throughput, 3),
                "p99_vs_health": round(m.p99_ms / base.p99_ms, 3) if base.p99_ms else None,
            }
        )
    return rows


def print_table(measurements: Sequence[Measurement], ratio_rows: Sequence[dict[str, Any]]) -> None:
    header = (
        f"{'rpc':<20}{'mode':<7}{'wrk':>4}{'conc':>6}{'rate':>7}{'ok':>8}{'err':>6}"
        f"{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'x tput':>8}{'x p99':>8}"
        f"{'cpu ms':>8}"
    )
    by_key = {
        (r["rpc"], r["mode"], r["workers"], r["concurrency"], r["offered_rate"]): r
        for r in ratio_rows
    }
    print(header)
    print("-" * len(header))
    for m in measurements:
        r = by_key.get((m.rpc, m.mode, m.workers, m.concurrency, m.offered_rate), {})
        xt = f"{r['throughput_vs_health']:.2f}" if r else ""
        xp = f"{r['p99_vs_health']:.1f}" if r and r.get("p99_vs_health") is not None else ""
        rate = f"{m.offered_rate:.0f}" if m.mode == "open" else "-"
        print(
            f"{m.rpc:<20}{m.mode:<7}{m.workers:>4}{m.concurrency:>6}{rate:>7}{m.requests:>8}"
            f"{sum(m.errors.values()):>6}{m.throughput:>9.1f}{m.p50_ms:>9.2f}{m.p95_ms:>9.2f}"
            f"{m.p99_ms:>9.2f}{xt:>8}{xp:>8}"
            + (f"{m.server_cpu_ms:>8.3f}" if m.server_cpu_ms is not None else f"{'':>8}")
        )


def plot(measurements: Sequence[Measurement], path: Path, title: str) -> bool:
    """Latency (p50 and p99) against throughput, one line per RPC; False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional (dev extra), only needed for the plot

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    closed = [m for m in measurements if m.mode == "closed"]
    worker_counts = sorted({m.workers for m in closed})
    for ax, quantile in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        for rpc in dict.fromkeys(m.rpc for m in closed):
            for workers in worker_counts:
                points = sorted(
                    (m.throughput, getattr(m, quantile))
                    for m in closed
                    if m.rpc == rpc and m.workers == workers
                )
                if not points:
                    continue
                label = rpc if len(worker_counts) == 1 else f"{rpc} ({workers} workers)"
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_xlabel("throughput (requests/s)")
        ax.set_title(f"{quantile.removesuffix('_ms')} latency vs throughput (closed loop)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- entry point ------------------------------------------------------------------------------


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

    def specs(rpc: str, mode: str, level: int, duration: float) -> list[LoadSpec]:
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
        generators.run(specs(rpc, "closed", 8, args.warmup))
    for level in plan.levels:
        results.extend(measure(specs(rpc, "closed", level, args.duration)) for rpc in everything)
    if not args.no_open_loop:
        results.extend(measure(specs(rpc, "open", 0, args.duration)) for rpc in everything)
    return results
