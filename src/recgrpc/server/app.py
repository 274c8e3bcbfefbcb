"""Server factory: `create_server` builds, binds and starts one server (tests, embedding, serve)."""

from __future__ import annotations

import gc
import ipaddress
import logging
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.trace import TracerProvider
from threadpoolctl import threadpool_limits

from recgrpc import tracing
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.db.engine import ConnectionBudgets
from recgrpc.domain import utcnow
from recgrpc.jobs.churn_scoring import ActiveChurnModel
from recgrpc.model.ranking import RankingEngine, ServingSnapshot
from recgrpc.server import ports
from recgrpc.server.handlers import ChurnPredictor, Handlers
from recgrpc.server.health import SERVICE_NAME as HEALTH_SERVICE
from recgrpc.server.health import HealthService
from recgrpc.server.interceptors import load_tokens, standard_interceptors
from recgrpc.server.metrics import ServerMetrics
from recgrpc.server.reflection import ReflectionService
from recgrpc.server.refresher import SERVICE_NAMES, Refresher, set_serving
from recgrpc.server.registry import service_handler
from recgrpc.server.servicers import CatalogServicer, RecommendationServicer
from recgrpc.server.tracing import ServerTracing
from recgrpc.v1 import catalog_pb2, recommendation_pb2

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """A started server; ``port`` is the bound port (useful when 0 was asked for)."""

    server: grpc.Server
    port: int
    handlers: Handlers
    health: HealthService
    refresher: Refresher
    reflection: ReflectionService | None = None
    owns_db: bool = True
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    tracing: ServerTracing | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self.refresher.ready.wait(timeout)

    def stop(self, grace: float | None = None, drain_delay: float = 0.0) -> None:
        """Report NOT_SERVING, keep answering for ``drain_delay`` seconds, then refuse new calls
        and let in-flight ones finish within ``grace`` seconds; release everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        # Permanent: a refresh finishing during the drain cannot flip it back to SERVING.
        self.health.enter_graceful_shutdown()
        self.refresher.stop()
        if drain_delay > 0:
            time.sleep(drain_delay)
        self.server.stop(grace).wait()
        self.health.close()
        if self.reflection is not None:
            self.reflection.close()
        self.handlers.close()
        if self.tracing is not None:
            self.tracing.close()
        if self.owns_db:
            self.handlers.db.dispose()

    def wait(self) -> None:
        self.server.wait_for_termination()


GC_THRESHOLDS = (10_000, 20, 10)
"""The garbage collector's thresholds in a server process (Python's default: 700, 10, 10)."""


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Clients may ping every 10 s without data in flight (matches the client's keepalive).
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Close connections after a while (callers reconnect transparently) so clients that
        # resolve a headless Service spread over replicas added since they first connected.
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_seconds * 1000)),
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]


def create_server(
    settings: Settings,
    *,
    db: Database | None = None,
    churn: ChurnPredictor | None = None,
    interceptors: Sequence[grpc.ServerInterceptor[Any, Any]] = (),
    metrics: ServerMetrics | None = None,
    tracer_provider: TracerProvider | None = None,
) -> RunningServer:
    """Build, bind and start a server; returns once it listens (health NOT_SERVING until ready).

    The standard interceptors (access log, metrics, auth and rate limit as configured) run
    outside any given ``interceptors``. ``metrics`` defaults to a fresh registry per server.
    Traces go to ``tracer_provider`` when given, else over OTLP when ``settings.otlp_endpoint``
    is set (``server.tracing``).
    """
    # Each request scores with one matrix-vector product on its RPC thread; BLAS's own worker
    # threads would only spin against the other RPC threads (process-wide, like BLAS itself).
    threadpool_limits(limits=1, user_api="blas")
    # Every call allocates a few hundred objects (messages, tuples, the ranked list) while the
    # heap holds the model's catalogue and the cached user contexts: with Python's default
    # thresholds full collections, each walking all of it, ran every few thousand calls.
    # Rarer young collections make full ones rare too (process-wide, like BLAS above; garbage
    # cycles are still collected).
    gc.set_threshold(*GC_THRESHOLDS)
    owns_db = db is None
    metrics = metrics if metrics is not None else ServerMetrics()
    tokens = load_tokens(settings.auth_tokens_file) if settings.auth_tokens_file else None
    database = db or Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        budgets=ConnectionBudgets.from_settings(settings, server=True),
    )
    metrics.watch_pool(database.engine.pool)  # type: ignore[arg-type]
    engine = RankingEngine(ServingSnapshot.empty(utcnow()), span=tracing.span)
    if churn is None:
        # Serves the active churn model; the refresher loads it and any newer one.
        churn = ActiveChurnModel(settings.churn_medium_threshold, settings.churn_high_threshold)
    handlers = Handlers(settings, database, engine, churn=churn, metrics=metrics)
    chain = standard_interceptors(
        metrics,
        tokens=tokens,
        rate_limit_per_second=settings.rate_limit_per_second,
        rate_limit_burst=settings.rate_limit_burst,
        stream_limit_per_peer=settings.stream_limit_per_peer,
        auth_failures_per_second=settings.auth_failures_per_second,
        auth_failure_burst=settings.auth_failure_burst,
        health_rate_limit_per_second=settings.health_rate_limit_per_second,
    )
    server_tracing = ServerTracing.configure(settings, tracer_provider)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        interceptors=[*server_tracing.interceptors(), *chain, *interceptors],
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
    # Long-lived streams never hold the RPC threads: health Watch is non-blocking, reflection
    # has threads of its own (server.health, server.reflection).
    health_servicer = HealthService()
    set_serving(health_servicer, False)
    reflection = ReflectionService(
        (*SERVICE_NAMES, HEALTH_SERVICE),
        workers=settings.reflection_workers,
        idle_seconds=settings.stream_idle_seconds,
    )
    server.add_generic_rpc_handlers((health_servicer.handler(), reflection.handler()))
    address = f"{settings.host}:{settings.port}"
    try:
        port = _add_port(server, settings, address)
    except RuntimeError as exc:  # gRPC's "Failed to bind", after its own log line
        health_servicer.close()
        reflection.close()
        server_tracing.close()
        reason = "not available (another listener, or not an address of this machine)"
        raise ports.PortUnavailable("gRPC", settings.host, settings.port, reason, "port") from exc
    server.start()
    refresher = Refresher(handlers, health_servicer, settings.refresh_seconds)
    refresher.start()
    log.debug("gRPC server bound to %s:%d", settings.host, port)
    if tokens is None and not _is_loopback(settings.host):
        log.warning(
            "no authentication: any caller that reaches %s:%d can read and write; set "
            "RECGRPC_AUTH_TOKENS_FILE (bearer tokens) or bind --host 127.0.0.1",
            settings.host,
            port,
        )
    return RunningServer(
        server,
        port,
        handlers,
        health_servicer,
        refresher,
        reflection=reflection,
        owns_db=owns_db,
        metrics=metrics,
        tracing=server_tracing,
    )


def _add_port(server: grpc.Server, settings: Settings, address: str) -> int:
    if settings.tls_cert_file:
        credentials = grpc.ssl_server_credentials(
            [(_read_bytes(settings.tls_key_file), _read_bytes(settings.tls_cert_file))]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    return port


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
