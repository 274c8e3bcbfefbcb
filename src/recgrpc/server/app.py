"""Server factory and lifecycle: `create_server` for tests and embedding, `serve` for the CLI."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.model.ranking import RankingEngine, ServingSnapshot
from recgrpc.server.handlers import ChurnPredictor, Handlers, build_snapshot, utcnow
from recgrpc.server.registry import service_handler
from recgrpc.server.servicers import CatalogServicer, RecommendationServicer
from recgrpc.v1 import catalog_pb2, recommendation_pb2

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
)


class Refresher(threading.Thread):
    """Rebuilds the serving snapshot periodically (and at once after catalogue writes).

    The first successful build flips health to SERVING; failures keep the last snapshot.
    """

    def __init__(
        self, handlers: Handlers, health_servicer: health.HealthServicer, interval: float
    ) -> None:
        super().__init__(name="recgrpc-refresher", daemon=True)
        self.handlers = handlers
        self.health = health_servicer
        self.interval = interval
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def refresh_once(self) -> bool:
        h = self.handlers
        try:
            h.engine.swap(build_snapshot(h.db, h.settings, h.clock()))
        except Exception:
            log.exception("serving snapshot refresh failed; keeping the previous one")
            return False
        if not self.ready.is_set():
            self.ready.set()
            set_serving(self.health, True)
        return True

    def run(self) -> None:
        while not self.stopping.is_set():
            self.refresh_once()
            self.handlers.catalog_changed.wait(self.interval)
            self.handlers.catalog_changed.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.handlers.catalog_changed.set()


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, status)


@dataclass
class RunningServer:
    """A started server; ``port`` is the bound port (useful when 0 was asked for)."""

    server: grpc.Server
    port: int
    handlers: Handlers
    health: health.HealthServicer
    refresher: Refresher
    owns_db: bool = True
    _stopped: threading.Event = field(default_factory=threading.Event)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self.refresher.ready.wait(timeout)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds, release all."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        set_serving(self.health, False)
        self.refresher.stop()
        self.server.stop(grace).wait()
        if self.owns_db:
            self.handlers.db.dispose()

    def wait(self) -> None:
        self.server.wait_for_termination()


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Clients may ping every 10 s without data in flight (matches the client's keepalive).
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]


def create_server(
    settings: Settings,
    *,
    db: Database | None = None,
    churn: ChurnPredictor | None = None,
    interceptors: Sequence[grpc.ServerInterceptor[Any, Any]] = (),
) -> RunningServer:
    """Build, bind and start a server; returns once it listens (health NOT_SERVING until ready)."""
    owns_db = db is None
    database = db or Database(settings.database_url, pool_size=settings.db_pool_size)
    engine = RankingEngine(ServingSnapshot.empty(utcnow()))
    handlers = Handlers(settings, database, engine, churn=churn)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        interceptors=list(interceptors),
        options=server_options(settings),
    )
    server.add_generic_rpc_handlers(
        (
            service_handler(
                recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"],
                RecommendationServicer(handlers),
            ),
            service_handler(
                catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"],
                CatalogServicer(handlers),
            ),
        )
    )
    health_servicer = health.HealthServicer()
    set_serving(health_servicer, False)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    server.start()
    refresher = Refresher(handlers, health_servicer, settings.refresh_seconds)
    refresher.start()
    log.info("gRPC server listening on %s:%d", settings.host, port)
    return RunningServer(server, port, handlers, health_servicer, refresher, owns_db=owns_db)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then drain in-flight calls for ``grace_seconds``."""
    running = create_server(settings)
    done = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d received: draining for up to %.1fs", signum, settings.grace_seconds)
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    done.wait()
    running.stop(settings.grace_seconds)
    log.info("server stopped")
    return 0
