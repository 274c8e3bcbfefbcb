"""The server's ports: a port that cannot be bound is one error naming it and its setting.

``recgrpc serve`` checks its ports before it builds anything, so a taken port ends the command
with one line (the CLI adds which flag or variable picks another) instead of gRPC's own log line
and a traceback after the start-up work.
"""

from __future__ import annotations

import errno
import socket

REASONS = {
    errno.EADDRINUSE: "already in use (is another server running?)",
    errno.EACCES: "not allowed for this user (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "on an address this machine does not have",
}


class PortUnavailable(OSError):
    """``purpose`` (``gRPC``, ``metrics``) cannot listen on ``host:port``; ``setting`` is the
    ``Settings`` field that chooses the port."""

    def __init__(self, purpose: str, host: str, port: int, reason: str, setting: str) -> None:
        super().__init__(f"the {purpose} port {port} on {host} is {reason}")
        self.purpose = purpose
        self.host = host
        self.port = port
        self.setting = setting


def ensure_free(purpose: str, host: str, port: int, setting: str) -> None:
    """Raise ``PortUnavailable`` unless a listener could bind ``host:port`` now (0: any port).

    Binds with SO_REUSEADDR, as gRPC's and the metrics endpoint's listeners do, so a port whose
    old connections linger in TIME_WAIT counts as free, one with a listener as taken.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise PortUnavailable(purpose, host, port, f"unusable: {exc.strerror}", setting) from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = REASONS.get(exc.errno or 0, exc.strerror or "not available")
            raise PortUnavailable(purpose, host, port, reason, setting) from exc
