"""`serve` for the CLI: run one server process (or forked workers) until SIGTERM/SIGINT.

Checks the ports first, opens the metrics and dashboard endpoints beside the gRPC server, logs
one line when ready and drains in-flight calls on the signal.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

from recgrpc.config import Settings
from recgrpc.server import ports
from recgrpc.server.app import create_server
from recgrpc.server.interceptors import TokenSet, load_tokens
from recgrpc.server.metrics import MetricsEndpoint, ServerMetrics
from recgrpc.server.workers import serve_workers

# The README documents this logger for the start-up line: one name for the whole server.
log = logging.getLogger("recgrpc.server.app")


def _transport(settings: Settings) -> str:
    """How callers reach the server, for the start-up line."""
    parts = ["TLS" if settings.tls_cert_file else "plaintext"]
    if settings.auth_tokens_file:
        parts.append("bearer tokens")
    if settings.rate_limit_per_second > 0:
        parts.append(f"{settings.rate_limit_per_second:g} calls/s per caller")
    return ", ".join(parts)


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
