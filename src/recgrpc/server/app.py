"""Server factory and lifecycle: `create_server` for tests and embedding, `serve` for the CLI."""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from opentelemetry.trace import TracerProvider
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from threadpoolctl import threadpool_limits

from recgrpc import tracing
from recgrpc.config import Settings
from recgrpc.db import Database, queries
from recgrpc.db.engine import ConnectionBudgets
from recgrpc.domain import utcnow
from recgrpc.jobs.churn_scoring import ActiveChurnModel
from recgrpc.model.ranking import RankingEngine, ServingSnapshot
from recgrpc.model.representations import ModelView
from recgrpc.server import ports
from recgrpc.server.errors import is_database_outage
from recgrpc.server.handlers import ChurnPredictor, Handlers, build_snapshot
from recgrpc.server.health import SERVICE_NAME as HEALTH_SERVICE
from recgrpc.server.health import HealthService
from recgrpc.server.interceptors import TokenSet, load_tokens, standard_interceptors
from recgrpc.server.metrics import MetricsEndpoint, ServerMetrics
from recgrpc.server.reflection import ReflectionService
from recgrpc.server.registry import service_handler
from recgrpc.server.servicers import CatalogServicer, RecommendationServicer
from recgrpc.server.tracing import ServerTracing
from recgrpc.server.workers import serve_workers
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

    def __init__(self, handlers: Handlers, health_servicer: HealthService, interval: float) -> None:
        super().__init__(name="recgrpc-refresher", daemon=True)
        self.handlers = handlers
        self.health = health_servicer
        self.interval = interval
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def refresh_once(self) -> bool:
        h = self.handlers
        refresh_churn_model(h)
        try:
            with h.snapshot_lock:
                previous = h.engine.snapshot
                h.engine.swap(build_snapshot(h.db, h.settings, h.clock(), previous))
            h.search.refresh(h.db, h.engine.snapshot)
        except Exception as exc:
            if not is_database_outage(exc):
                log.exception("serving snapshot refresh failed; keeping the previous one")
                return False
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            log.warning("database unavailable (%s); retrying in %.0fs", reason, self.interval)
            return False
        log_model_change(previous.model, h.engine.snapshot)
        try:
            h.discovery.refresh(h.engine.snapshot)
        except Exception as exc:  # similar items fall back to trending meanwhile
            if not is_database_outage(exc):
                log.exception("neighbour table refresh failed; retrying next refresh")
        report_serving_models(h)
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


def refresh_churn_model(handlers: Handlers) -> None:
    """Pick up a newly trained churn model; on failure the one in use stays."""
    if handlers.churn is None:
        return
    try:
        if handlers.churn.refresh(handlers.db):
            log.info("churn model %s loaded", handlers.churn.version)
    except Exception as exc:
        if not is_database_outage(exc):  # an outage: the snapshot refresh says so, once
            log.exception("churn model refresh failed; keeping the previous one")


def log_model_change(previous: ModelView | None, snapshot: ServingSnapshot) -> None:
    """One line when the serving recommender model is loaded, hot-swapped or gone."""
    model = snapshot.model
    if model is None:
        if previous is not None:
            log.info("recommender model %s is no longer active; serving trending", previous.version)
        return
    if previous is not None and previous.version == model.version:
        return
    log.info(
        "recommender model %s %s: %d users and %d items trained, %d catalogue items served",
        model.version,
        "loaded" if previous is None else f"hot-swapped in for {previous.version}",
        len(model.user_index),
        int(model.trained.sum()),
        len(snapshot.catalog),
    )


def report_serving_models(handlers: Handlers) -> None:
    """Export the serving models' versions, ages and training metrics when a version changes."""
    metrics = handlers.metrics
    if metrics is None:
        return
    serving: dict[str, str] = {}
    view = handlers.engine.snapshot.model
    if view is not None:
        serving["recommender"] = view.version
    churn_version = handlers.churn.version if handlers.churn is not None else None
    if churn_version:
        serving["churn"] = churn_version
    known = metrics.models()
    changed = {k: v for k, v in serving.items() if k not in known or known[k].version != v}
    if not changed:
        return
    try:
        with handlers.db.reader() as session:
            summaries = {k: queries.model_summary(session, v) for k, v in changed.items()}
    except Exception:
        log.warning("model metadata for metrics not read; retrying next refresh", exc_info=True)
        return
    for kind, summary in summaries.items():
        if summary is not None:
            metrics.model_loaded(kind, changed[kind], *summary)


def set_serving(health_servicer: HealthService, serving: bool) -> None:
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


def _transport(settings: Settings) -> str:
    """How callers reach the server, for the start-up line."""
    parts = ["TLS" if settings.tls_cert_file else "plaintext"]
    if settings.auth_tokens_file:
        parts.append("bearer tokens")
    if settings.rate_limit_per_second > 0:
        parts.append(f"{settings.rate_limit_per_second:g} calls/s per caller")
    return ", ".join(parts)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then drain in-flight calls for ``grace_seconds``.

    With ``settings.workers > 1``, forks that many processes sharing the port (server.workers).
    Raises ``ports.PortUnavailable`` before any start-up work when a port is taken.
    """
    ports.ensure_free("gRPC", settings.host, settings.port, "port")
    if settings.metrics_port:
        for index in range(settings.workers):
            port = settings.metrics_port + index
            ports.ensure_free("metrics", settings.host, port, "metrics_port")
    if settings.dashboard_port:
        host = settings.dashboard_host or settings.host
        for index in range(settings.workers):
            port = settings.dashboard_port + index
            ports.ensure_free("dashboard", host, port, "dashboard_port")
    if settings.workers > 1:
        return serve_workers(settings, _serve_one)
    return _serve_one(settings)


def _serve_one(settings: Settings) -> int:
    metrics = ServerMetrics()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=metrics.registry)
    endpoint = None
    if settings.metrics_port:
        try:
            endpoint = MetricsEndpoint(metrics.registry, settings.metrics_port, settings.host)
        except OSError as exc:
            reason = ports.REASONS.get(exc.errno or 0, exc.strerror or "not available")
            raise ports.PortUnavailable(
                "metrics", settings.host, settings.metrics_port, reason, "metrics_port"
            ) from exc
    try:
        running = create_server(settings, metrics=metrics)
    except BaseException:
        if endpoint is not None:
            endpoint.close()
        raise
    dashboard = None
    if settings.dashboard_port:
        # Imported here: the dashboard sits on top of the handlers and imports server modules.
        from recgrpc.dashboard import Capabilities, DashboardServer  # noqa: PLC0415

        tokens = load_tokens(settings.auth_tokens_file) if settings.auth_tokens_file else None
        try:
            dashboard = DashboardServer(
                running.handlers,
                settings.dashboard_host or settings.host,
                settings.dashboard_port,
                tokens=None if tokens is None else TokenSet(tokens),
                capabilities=Capabilities(similar_items=running.handlers.discovery.preview_similar),
            )
        except OSError as exc:
            running.stop(0)
            if endpoint is not None:
                endpoint.close()
            reason = ports.REASONS.get(exc.errno or 0, exc.strerror or "not available")
            raise ports.PortUnavailable(
                "dashboard", settings.host, settings.dashboard_port, reason, "dashboard_port"
            ) from exc
    done = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d received: draining for up to %.1fs", signum, settings.grace_seconds)
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not done.is_set():  # woken every 0.2 s so a signal before readiness is not missed
        if running.wait_ready(0.2):
            metrics_at = (
                f"metrics on {settings.host}:{endpoint.port}/metrics" if endpoint else "metrics off"
            )
            log.info(
                "serving on %s:%d (%s; %s)",
                settings.host,
                running.port,
                _transport(settings),
                metrics_at,
            )
            break
    done.wait()
    running.stop(settings.grace_seconds, drain_delay=settings.drain_delay_seconds)
    if endpoint is not None:
        endpoint.close()
    if dashboard is not None:
        dashboard.close()
    log.info("server stopped")
    return 0
