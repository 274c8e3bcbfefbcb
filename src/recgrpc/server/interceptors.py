"""Server interceptors: access logs and metrics, and the standard chain with admission.

Each interceptor takes its collaborators (a ``ServerMetrics``, a logger, a token set, a bucket
table) as parameters. They wrap a method's behaviour once and reuse the wrapper, so the per-call
cost is one extra Python frame per interceptor (base classes: ``server.interception``; auth,
rate and stream limits: ``server.admission``).

Order (outermost first, see ``standard_interceptors``): logging, metrics, stream limit, auth,
rate limit. The outer two therefore see the final status of every call, including the
UNAUTHENTICATED and RESOURCE_EXHAUSTED answers of the inner ones and codes set by
``context.abort``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from recgrpc.logs import request_id_var
from recgrpc.server.admission import (
    HEALTH_SERVICE,
    PUBLIC_SERVICES,
    BearerTokenAuthInterceptor,
    RateLimitInterceptor,
    StreamLimitInterceptor,
    TokenBuckets,
    TokenSet,
    bearer_token,
    caller_key,
    load_tokens,
    peer_host,
)
from recgrpc.server.interception import ObservingInterceptor, RpcInfo, metadata_value
from recgrpc.server.metrics import ServerMetrics

if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor

REQUEST_ID_KEY = "x-request-id"
# Printable ASCII without spaces: safe to echo into logs and metadata.
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


class MetricsInterceptor(ObservingInterceptor[float]):
    """Counts started and handled RPCs and observes their latency in ``metrics``."""

    def __init__(self, metrics: ServerMetrics, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.metrics = metrics
        self.clock = clock

    def begin(self, rpc: RpcInfo, context: grpc.ServicerContext) -> float:
        self.metrics.rpc_started(rpc.grpc_type, rpc.service, rpc.method)
        return self.clock()

    def end(
        self, rpc: RpcInfo, context: grpc.ServicerContext, state: float, code: grpc.StatusCode
    ) -> None:
        elapsed = self.clock() - state
        self.metrics.rpc_handled(rpc.grpc_type, rpc.service, rpc.method, code.name, elapsed)


@dataclass(slots=True)
class _CallLog:
    started: float
    request_id: str


class AccessLogInterceptor(ObservingInterceptor[_CallLog]):
    """One log line per call: method, code, duration_ms, peer and request id.

    The request id comes from the caller's ``x-request-id`` metadata (when it is printable and
    at most 128 characters) or is made here; it is sent back in trailing metadata and attached
    to every record logged while the call runs. Metadata values are never logged, so tokens
    cannot leak. Health checks log at DEBUG: probes would drown everything else.
    """

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.logger = logger
        self.clock = clock

    def begin(self, rpc: RpcInfo, context: grpc.ServicerContext) -> _CallLog:
        given = metadata_value(context, REQUEST_ID_KEY)
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        request_id_var.set(request_id)
        return _CallLog(self.clock(), request_id)

    def end(
        self, rpc: RpcInfo, context: grpc.ServicerContext, state: _CallLog, code: grpc.StatusCode
    ) -> None:
        duration_ms = round((self.clock() - state.started) * 1000, 3)
        # Trailing, not initial, metadata: sending initial metadata early costs an extra batch
        # per call, and abort_with_status replaces trailing metadata, so append after it.
        trailing = tuple(context.trailing_metadata() or ())
        context.set_trailing_metadata((*trailing, (REQUEST_ID_KEY, state.request_id)))
        level = logging.DEBUG if rpc.service == HEALTH_SERVICE else logging.INFO
        if self.logger.isEnabledFor(level):
            peer = context.peer()
            self.logger.log(
                level,
                "rpc %s code=%s duration_ms=%.3f peer=%s request_id=%s",
                rpc.full_method,
                code.name,
                duration_ms,
                peer,
                state.request_id,
                extra={
                    "method": rpc.full_method,
                    "code": code.name,
                    "duration_ms": duration_ms,
                    "peer": peer,
                    "request_id": state.request_id,
                },
            )
        request_id_var.set("")


def standard_interceptors(
    metrics: ServerMetrics,
    *,
    access_log: logging.Logger | None = None,
    tokens: Iterable[str] | None = None,
    rate_limit_per_second: float = 0.0,
    rate_limit_burst: int = 100,
    stream_limit_per_peer: int = 0,
    auth_failures_per_second: float = 0.0,
    auth_failure_burst: int = 20,
    health_rate_limit_per_second: float = 0.0,
) -> list[_Interceptor]:
    """The server's chain, outermost first: logging, metrics, stream limit (if > 0), auth (if
    tokens; failures limited per peer if > 0), rate limit (if > 0: per principal or peer, and
    the health service per peer at its own rate if that is > 0).

    New interceptors (tracing) go first, so they see every call and its final status.
    """
    chain: list[_Interceptor] = [
        AccessLogInterceptor(access_log or logging.getLogger("recgrpc.access")),
        MetricsInterceptor(metrics),
    ]
    if stream_limit_per_peer > 0:
        chain.append(StreamLimitInterceptor(stream_limit_per_peer))
    if tokens is not None:
        failures = None
        if auth_failures_per_second > 0:
            failures = TokenBuckets(auth_failures_per_second, auth_failure_burst)
        chain.append(BearerTokenAuthInterceptor(tokens, failures=failures))
    if rate_limit_per_second > 0:
        chain.append(RateLimitInterceptor(TokenBuckets(rate_limit_per_second, rate_limit_burst)))
        if health_rate_limit_per_second > 0:
            burst = max(1, round(2 * health_rate_limit_per_second))  # two seconds' worth
            health = TokenBuckets(health_rate_limit_per_second, burst)
            chain.append(RateLimitInterceptor(health, (), only_services=(HEALTH_SERVICE,)))
    return chain


__all__ = [
    "HEALTH_SERVICE",
    "PUBLIC_SERVICES",
    "REQUEST_ID_KEY",
    "AccessLogInterceptor",
    "BearerTokenAuthInterceptor",
    "MetricsInterceptor",
    "RateLimitInterceptor",
    "RpcInfo",
    "StreamLimitInterceptor",
    "TokenBuckets",
    "TokenSet",
    "bearer_token",
    "caller_key",
    "load_tokens",
    "peer_host",
    "standard_interceptors",
]
