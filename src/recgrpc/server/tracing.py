"""OpenTelemetry traces: a server span per RPC, continued from the caller's ``traceparent``.

Off unless ``RECGRPC_OTLP_ENDPOINT`` is set (or a test passes its own ``TracerProvider``); off,
no interceptor is installed and the step hooks of ``recgrpc.tracing`` do nothing. On, every
RecommendationService and CatalogService call gets a SERVER span named
``recgrpc.v1.RecommendationService/GetRecommendations`` (service/method, the semantic
conventions' RPC span name), with the caller's W3C trace context as its parent, and the steps
inside it (``recgrpc.user_context``, ``recgrpc.score``, ``recgrpc.rerank``,
``recgrpc.group_commit``) as children. Spans are batched and exported over OTLP/gRPC.

The interceptor is one of the project's own (``server.interceptors``) rather than
opentelemetry-instrumentation-grpc's: its final status comes from ``final_code`` like the
metrics', so the codes that ``abort_with_status`` sets (every domain error, see
``server.registry``) reach the span, which the instrumentation's context wrapper does not
record; and it wraps each method once instead of rebuilding the handler on every call.
User ids are never put on spans: traces leave the service for a collector whose retention
DeleteUser cannot reach.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from contextvars import Token
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from recgrpc import __version__, tracing
from recgrpc.config import Settings
from recgrpc.server.admission import HEALTH_SERVICE, REFLECTION_SERVICES
from recgrpc.server.interception import Behaviour, ObservingInterceptor, RpcInfo
from recgrpc.server.interceptors import REQUEST_ID_KEY, _Interceptor

INSTRUMENTATION_NAME = "recgrpc.server"
# Probes every few seconds would bury the traces worth reading.
UNTRACED_SERVICES = frozenset({HEALTH_SERVICE, *REFLECTION_SERVICES})
# The codes a server span reports as an error (the semantic conventions' list for servers);
# a caller's mistake (INVALID_ARGUMENT, NOT_FOUND, ...) leaves the status unset.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_PROPAGATOR = TraceContextTextMapPropagator()


class _MetadataGetter(Getter[Sequence[Any]]):
    """Reads W3C headers from invocation metadata (a sequence of key/value pairs)."""

    def get(self, carrier: Sequence[Any], key: str) -> list[str] | None:
        values = [str(item[1]) for item in carrier if item[0] == key]
        return values or None

    def keys(self, carrier: Sequence[Any]) -> list[str]:
        return [str(item[0]) for item in carrier]


_GETTER = _MetadataGetter()


def peer_address(peer: str) -> str:
    """``ipv4:10.0.0.1:5123`` -> ``10.0.0.1``; ``ipv6:[::1]:5123`` -> ``::1``."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    return rest.rpartition(":")[0].strip("[]")


@dataclass(slots=True)
class _CallSpan:
    span: trace.Span
    context_token: Token[otel_context.Context]
    tracer_token: Token[trace.Tracer | None]


class TracingInterceptor(ObservingInterceptor[_CallSpan]):
    """Starts a SERVER span per call, child of the caller's ``traceparent`` when one is sent.

    Install it outermost: its span then covers the whole chain, including calls refused by
    authentication or the rate limit, and it finds the access log's request id in the
    trailing metadata (``recgrpc.request_id``, to go from a trace to its log line).
    """

    def __init__(
        self, tracer: trace.Tracer, untraced_services: Iterable[str] = UNTRACED_SERVICES
    ) -> None:
        super().__init__()
        self.tracer = tracer
        self.untraced_services = frozenset(untraced_services)

    def wrap(self, behaviour: Behaviour, rpc: RpcInfo, *, streaming: bool) -> Behaviour:
        if rpc.service in self.untraced_services:
            return behaviour
        return super().wrap(behaviour, rpc, streaming=streaming)

    def begin(self, rpc: RpcInfo, context: grpc.ServicerContext) -> _CallSpan:
        parent = _PROPAGATOR.extract(context.invocation_metadata() or (), getter=_GETTER)
        span = self.tracer.start_span(
            f"{rpc.service}/{rpc.method}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": rpc.service,
                "rpc.method": rpc.method,
                "network.peer.address": peer_address(context.peer()),
            },
        )
        context_token = otel_context.attach(trace.set_span_in_context(span, parent))
        return _CallSpan(span, context_token, tracing.enter_call(self.tracer))

    def end(
        self, rpc: RpcInfo, context: grpc.ServicerContext, state: _CallSpan, code: grpc.StatusCode
    ) -> None:
        span = state.span
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        for key, value in context.trailing_metadata() or ():
            if key == REQUEST_ID_KEY:
                span.set_attribute("recgrpc.request_id", str(value))
        if code in SERVER_ERRORS:
            span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
        tracing.leave_call(state.tracer_token)
        otel_context.detach(state.context_token)
        span.end()


def tracer_provider(settings: Settings) -> TracerProvider | None:
    """The provider exporting over OTLP/gRPC to ``settings.otlp_endpoint``; None when unset."""
    if not settings.otlp_endpoint:
        return None
    # Imported only when tracing is on: the exporter brings its own gRPC stubs.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    resource = Resource.create(
        {
            "service.name": settings.trace_service_name,
            "service.version": __version__,
            # Tells replicas (pods) and worker processes apart.
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
        }
    )
    provider = TracerProvider(
        resource=resource,
        # A caller's sampling decision is kept; ratio applies to traces that start here.
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    endpoint = settings.otlp_endpoint
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=urlparse(endpoint).scheme == "http")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class ServerTracing:
    """A server's tracing: its interceptors and, when it made it, the provider to shut down."""

    def __init__(self, provider: trace.TracerProvider | None, *, owned: bool) -> None:
        self.provider = provider
        self.owned = owned

    @classmethod
    def configure(
        cls, settings: Settings, provider: trace.TracerProvider | None = None
    ) -> ServerTracing:
        """A given ``provider`` (tests, embedding) wins over the settings' OTLP exporter."""
        if provider is not None:
            return cls(provider, owned=False)
        return cls(tracer_provider(settings), owned=True)

    def interceptors(self) -> list[_Interceptor]:
        if self.provider is None:
            return []
        tracer = self.provider.get_tracer(INSTRUMENTATION_NAME, __version__)
        return [TracingInterceptor(tracer)]

    def close(self) -> None:
        """Export what is still batched (call after the server stopped taking calls)."""
        if self.owned and isinstance(self.provider, TracerProvider):
            self.provider.shutdown()


__all__ = [
    "SERVER_ERRORS",
    "UNTRACED_SERVICES",
    "ServerTracing",
    "TracingInterceptor",
    "peer_address",
    "tracer_provider",
]
