"""Trace context for outgoing calls: W3C ``traceparent`` when the caller uses OpenTelemetry.

The client declares no dependency on OpenTelemetry. A service that traces has
``opentelemetry-api`` installed already, and the propagators it configured (W3C trace context
and baggage unless it chose others) write the current span into each call's metadata, so the
server's span becomes a child of the caller's. A service that does not trace has no context to
send, and nothing is imported.
"""

from __future__ import annotations

try:
    from opentelemetry import propagate as _propagate
except ImportError:  # the caller does not trace
    _propagate = None  # type: ignore[assignment]


def trace_headers() -> tuple[tuple[str, str], ...]:
    """The current trace context as metadata pairs; empty outside a span or without OTel."""
    if _propagate is None:
        return ()
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return tuple(carrier.items())
