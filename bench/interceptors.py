"""Cost of the server interceptors per call, measured side by side in one run.

    python bench/interceptors.py [--calls 3000] [--rounds 3]

Starts one gRPC server per configuration with only the health service (the cheapest handler
there is, so the interceptors' share is as large as it can be) and times sequential
``Health/Check`` calls from a client in this process over loopback:

- bare: no interceptors
- metrics: the Prometheus interceptor
- metrics+log: plus the access log, JSON lines written to /dev/null, and health calls logged
  (in production they log at DEBUG; here at INFO so every call pays for a log line, as every
  RecommendationService call does)
- full: plus bearer-token authentication and a (never reached) rate limit, both applied to the
  health service for this measurement (it is exempt in the server)

Prints mean and p50/p99 microseconds per call and each configuration's cost over bare.
Configurations are interleaved round by round so drift on a shared machine hits them equally.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from recgrpc.logs import JsonFormatter
from recgrpc.server.interceptors import (
    AccessLogInterceptor,
    BearerTokenAuthInterceptor,
    MetricsInterceptor,
    RateLimitInterceptor,
    TokenBuckets,
)
from recgrpc.server.metrics import ServerMetrics

TOKEN = "bench-token"


def access_logger() -> logging.Logger:
    logger = logging.getLogger("bench.access")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives for the run
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    return logger


def chains() -> dict[str, list[Any]]:
    logger = access_logger()
    return {
        "bare": [],
        "metrics": [MetricsInterceptor(ServerMetrics())],
        "metrics+log": [AccessLogInterceptor(logger), MetricsInterceptor(ServerMetrics())],
        "full": [
            AccessLogInterceptor(logger),
            MetricsInterceptor(ServerMetrics()),
            BearerTokenAuthInterceptor([TOKEN, "other-token"], exempt_services=()),
            RateLimitInterceptor(TokenBuckets(1e9, 10**9), exempt_services=()),
        ],
    }


def start(interceptors: list[Any]) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def time_calls(port: int, calls: int) -> list[float]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        request = health_pb2.HealthCheckRequest()
        metadata = (("authorization", f"Bearer {TOKEN}"), ("x-request-id", "bench"))
        for _ in range(200):  # warm up the connection and the wrapper caches
            check(request, metadata=metadata, timeout=5)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            check(request, metadata=metadata, timeout=5)
            samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    servers = {name: start(chain) for name, chain in chains().items()}
    samples: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for _ in range(args.rounds):
            for name, (_, port) in servers.items():
                samples[name].extend(time_calls(port, args.calls))
    finally:
        for server, _ in servers.values():
            server.stop(None)

    bare = statistics.fmean(samples["bare"])
    print(f"{'configuration':<14}{'mean us':>10}{'p50 us':>10}{'p99 us':>10}{'over bare':>12}")
    for name, values in samples.items():
        values.sort()
        mean = statistics.fmean(values)
        p50 = values[len(values) // 2]
        p99 = values[int(len(values) * 0.99)]
        extra = (mean - bare) * 1e6
        print(f"{name:<14}{mean * 1e6:>10.1f}{p50 * 1e6:>10.1f}{p99 * 1e6:>10.1f}{extra:>+10.1f}us")


if __name__ == "__main__":
    main()
