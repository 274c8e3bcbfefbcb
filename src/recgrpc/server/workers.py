"""``recgrpc serve --workers N``: N server processes sharing one port (SO_REUSEPORT).

The Python gRPC server runs handlers under one GIL, so one process uses about one core. As in
grpc's ``examples/python/multiprocessing``, the parent reserves the port with an SO_REUSEPORT
socket and forks the workers before it creates any gRPC object (gRPC's threads do not survive a
fork); each worker then builds its own server, database engine and refresher, and the kernel
spreads incoming connections over them. The parent only supervises: SIGTERM or SIGINT to it is
passed to every worker, which drains its in-flight calls; if a worker dies, the others are
stopped and the parent exits non-zero so the supervisor (systemd, Kubernetes) restarts it whole.

Each worker serves Prometheus metrics on ``metrics_port + index`` (index 0..N-1), and the
dashboard on ``dashboard_port + index``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import socket
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait
from types import FrameType

from recgrpc.config import Settings

log = logging.getLogger(__name__)

ServeOne = Callable[[Settings], int]


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Bind (without listening) an SO_REUSEPORT socket so the port stays ours; yields it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def worker_settings(settings: Settings, index: int, port: int) -> Settings:
    """What worker ``index`` runs with: the shared port, its own metrics and dashboard ports."""
    metrics_port = settings.metrics_port + index if settings.metrics_port else 0
    dashboard_port = settings.dashboard_port + index if settings.dashboard_port else 0
    return settings.replace(port=port, metrics_port=metrics_port, dashboard_port=dashboard_port)


def _worker_main(serve_one: ServeOne, settings: Settings) -> None:
    # The parent's handlers must not run here; serve_one installs its own (drain on SIGTERM).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise SystemExit(serve_one(settings))


def serve_workers(settings: Settings, serve_one: ServeOne) -> int:
    """Fork ``settings.workers`` processes running ``serve_one`` on one port; supervise them."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise RuntimeError("--workers needs SO_REUSEPORT (Linux or BSD)")
    ctx = multiprocessing.get_context("fork")
    stopping = False

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with reserve_port(settings.host, settings.port) as port:
        workers = [
            ctx.Process(
                target=_worker_main,
                args=(serve_one, worker_settings(settings, index, port)),
                name=f"recgrpc-worker-{index}",
            )
            for index in range(settings.workers)
        ]
        for process in workers:
            process.start()
        log.info(
            "%d workers serving on %s:%d (pids %s)",
            len(workers),
            settings.host,
            port,
            ", ".join(str(p.pid) for p in workers),
        )
        failed = False
        while not stopping:
            if wait([p.sentinel for p in workers], timeout=0.5):
                dead = [p for p in workers if not p.is_alive()]
                if dead and not stopping:
                    log.error(
                        "worker %s exited with code %s; stopping the others",
                        dead[0].name,
                        dead[0].exitcode,
                    )
                    failed = True
                    break
        for process in workers:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker drains its in-flight calls
        limit = settings.grace_seconds + settings.drain_delay_seconds + 5.0
        for process in workers:
            process.join(limit)
            if process.is_alive():
                log.error("worker %s did not stop in time; killing it", process.name)
                process.kill()
                process.join()
        # A worker stopped by SIGTERM before it installed its handler ends with -SIGTERM.
        failed = failed or any(p.exitcode not in {0, -signal.SIGTERM} for p in workers)
    log.info("all workers stopped")
    return 1 if failed else 0
