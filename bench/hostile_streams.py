"""Long-lived streams from unauthenticated callers against the health check and real calls.

    python bench/hostile_streams.py [--streams 80] [--probes 20] [--database-url URL]

Starts a server (bearer tokens on, default thread budget) on a fresh SQLite file (or the given
database), seeds a small catalogue, then measures health ``Check`` and an authenticated
``GetRecommendations`` (``--probes`` sequential calls each, 2 s deadline):

1. on a quiet server,
2. while ``--streams`` idle streams are open from unauthenticated clients on 8 connections:
   half ``Health/Watch`` whose responses are never read, half server-reflection streams that
   never send a request.

Prints, per phase and method, how many calls answered OK and their p50/max latency, and how
many of the hostile streams the server kept open or refused.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recgrpc.config import Settings
from recgrpc.db import upgrade
from recgrpc.server import create_server
from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import catalog_pb2_grpc as cat_grpc
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc

TOKEN = "bench-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
CONNECTIONS = 8


def own_channel(target: str) -> grpc.Channel:
    """A channel with its own TCP connection (channels otherwise share subchannels)."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def timed(call: Callable[[], object], probes: int) -> tuple[Counter[str], list[float]]:
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    for _ in range(probes):
        started = time.perf_counter()
        try:
            call()
            codes["OK"] += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1  # type: ignore[attr-defined]
        latencies.append((time.perf_counter() - started) * 1000)
    return codes, latencies


def report(phase: str, name: str, codes: Counter[str], latencies: list[float]) -> None:
    ok = codes.get("OK", 0)
    others = ", ".join(f"{k} {v}" for k, v in sorted(codes.items()) if k != "OK")
    print(
        f"{phase:<14} {name:<19} OK {ok:>3}/{sum(codes.values()):<3} "
        f"p50 {statistics.median(latencies):8.1f} ms  max {max(latencies):8.1f} ms"
        + (f"  ({others})" if others else "")
    )


def probe(target: str, probes: int, phase: str) -> None:
    with own_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        rec = pb_grpc.RecommendationServiceStub(channel)
        check = health_pb2.HealthCheckRequest()
        ask = pb.GetRecommendationsRequest(user_id="u1", limit=5)
        report(phase, "health Check", *timed(lambda: health.Check(check, timeout=2), probes))
        report(
            phase,
            "GetRecommendations",
            *timed(lambda: rec.GetRecommendations(ask, metadata=AUTH, timeout=2), probes),
        )


def idle_requests(stop: threading.Event) -> Iterator[reflection_pb2.ServerReflectionRequest]:
    stop.wait()  # a reflection client that connects and never asks anything
    return
    yield  # pragma: no cover - makes this a generator


def open_streams(target: str, count: int, stop: threading.Event) -> tuple[list[Any], list[Any]]:
    channels = [own_channel(target) for _ in range(CONNECTIONS)]
    calls: list[Any] = []
    for k in range(count):
        channel = channels[k % CONNECTIONS]
        if k % 2 == 0:
            stub = health_pb2_grpc.HealthStub(channel)
            calls.append(stub.Watch(health_pb2.HealthCheckRequest()))
        else:
            refl = reflection_pb2_grpc.ServerReflectionStub(channel)
            calls.append(refl.ServerReflectionInfo(idle_requests(stop)))
    return channels, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=80)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        tokens = Path(tmp) / "tokens"
        tokens.write_text(TOKEN + "\n")
        settings = Settings.from_env(
            {},
            database_url=url,
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            dashboard_port=0,
            auth_tokens_file=str(tokens),
        )
        running = create_server(settings)
        assert running.wait_ready(30)
        target = f"127.0.0.1:{running.port}"
        print(f"server: max_workers {settings.max_workers}, {args.streams} hostile streams")
        with own_channel(target) as channel:
            cat_grpc.CatalogServiceStub(channel).UpsertItems(
                cat_pb.UpsertItemsRequest(
                    items=[cat_pb.Item(item_id=f"i{k}", title=f"item {k}") for k in range(20)]
                ),
                metadata=AUTH,
                timeout=10,
            )
        time.sleep(1.0)  # the refresher picks up the catalogue
        probe(target, args.probes, "quiet")
        stop = threading.Event()
        channels, calls = open_streams(target, args.streams, stop)
        time.sleep(1.5)
        probe(target, args.probes, f"{args.streams} streams")
        ended = Counter(c.code().name for c in calls if c.done())
        print(
            f"hostile streams: {sum(1 for c in calls if not c.done())} still open, "
            f"ended: {dict(ended) or 'none'}"
        )
        stop.set()
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()
        running.stop(grace=1)


if __name__ == "__main__":
    main()
