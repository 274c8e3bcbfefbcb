"""`recgrpc serve --workers 2`: two processes share one port, and SIGTERM drains them both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recgrpc.v1 import catalog_pb2 as cat_pb
from recgrpc.v1 import recommendation_pb2 as pb
from tests.rpc import stubs

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free ports, all bound at once while choosing.

    Workers take ``metrics_port + index``, so a port chosen alone may have a taken neighbour.
    """
    for _ in range(100):
        held: list[socket.socket] = []
        try:
            first = socket.socket()
            held.append(first)
            first.bind(("127.0.0.1", 0))
            base: int = first.getsockname()[1]
            for offset in range(1, count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no run of {count} free ports found")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_two_workers_share_the_port_and_drain_on_sigterm(
    sqlite_template: Path, tmp_path: Path
) -> None:
    db_path = tmp_path / "workers.db"
    db_path.write_bytes(sqlite_template.read_bytes())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECGRPC_")}
    command = [
        sys.executable, "-m", "recgrpc.cli", "--database-url", f"sqlite:///{db_path}",
        "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
        "--dashboard-port", "0", "--workers", "2",
    ]  # fmt: skip
    parent = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + 60
        # Every fresh connection lands on one of the workers; all must be SERVING.
        while not all(serving(port) for _ in range(6)):
            assert parent.poll() is None, "server exited"
            assert time.monotonic() < deadline, "workers never became ready"
            time.sleep(0.3)
        workers = children(parent.pid)
        assert len(workers) == 2

        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            rec, catalog = stubs(ch)
            catalog.UpsertItems(
                cat_pb.UpsertItemsRequest(items=[cat_pb.Item(item_id="a")]), timeout=10
            )
            reply = rec.LogInteraction(
                pb.LogInteractionRequest(
                    event_id="e1", user_id="u", item_id="a", type=pb.INTERACTION_TYPE_VIEW
                ),
                timeout=10,
            )
            assert not reply.duplicate

        parent.send_signal(signal.SIGTERM)
        assert parent.wait(30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "port still open after drain"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
