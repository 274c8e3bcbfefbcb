"""The benchmark harness's results: measurements, ratios to the health check, table, plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from harness_load import HEALTH, LoadResult, LoadSpec

from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc


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
