"""The dashboard's HTTP server: the standard library's WSGI server, one thread per connection.

The same server the Prometheus endpoint runs on (``prometheus_client`` uses wsgiref's
``WSGIServer`` with ``ThreadingMixIn`` too), hardened for an operator's page: connections time
out, threads are daemons, request bodies are capped by the application, and page builds are
limited in number by ``DashboardApp``.
"""

from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from recgrpc.dashboard.sources import Capabilities, Sources
from recgrpc.dashboard.web import DashboardApp

if TYPE_CHECKING:
    from recgrpc.server.handlers import Handlers
    from recgrpc.server.interceptors import TokenSet

log = logging.getLogger(__name__)
access_log = logging.getLogger("recgrpc.dashboard.access")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _IPv6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _RequestHandler(WSGIRequestHandler):
    # A client that stops sending cannot hold its thread for longer than this.
    timeout = 15

    def log_message(self, format: str, *args: Any) -> None:
        access_log.debug("%s %s", self.address_string(), format % args)


class DashboardServer:
    """Serves the dashboard on ``host:port`` (0 picks a free port) until ``close``."""

    def __init__(
        self,
        handlers: Handlers,
        host: str,
        port: int,
        *,
        tokens: TokenSet | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        sources = Sources(handlers, capabilities or Capabilities())
        self.app = DashboardApp(sources, tokens)
        server_class = _IPv6ThreadingServer if ":" in host else _ThreadingServer
        self._server = make_server(
            host.strip("[]"),
            port,
            self.app,
            server_class=server_class,
            handler_class=_RequestHandler,
        )
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="recgrpc-dashboard",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "dashboard on http://%s:%d/ (%s)",
            host,
            self.port,
            "bearer tokens" if tokens is not None else "no authentication",
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
