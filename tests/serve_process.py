"""A `recgrpc serve` subprocess for the tests that need several server processes on one store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@contextmanager
def serve_process(
    url: str, port: int, *, metrics_port: int = 0, env: Mapping[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], grpc.Channel]]:
    """The process (refreshing every 0.5 s, with ``env`` on top of the caller's environment
    without its RECGRPC_ settings) and a channel to it, once it is SERVING."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RECGRPC_")}
    environment.update(RECGRPC_REFRESH_SECONDS="0.5", RECGRPC_DB_DEADLINE_SECONDS="10")
    environment.update(env or {})
    command = [
        sys.executable, "-m", "recgrpc.cli", "--database-url", url, "serve", "--host",
        "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
        "--dashboard-port", "0",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=environment)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "server exited"
                assert time.monotonic() < deadline, "server never became ready"
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
            yield process, channel
    finally:
        process.terminate()
        process.wait(30)
