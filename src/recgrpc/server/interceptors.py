"""Server interceptors: access logs, metrics, bearer-token authentication and rate limits.

Each interceptor takes its collaborators (a ``ServerMetrics``, a logger, a token set, a bucket
table) as parameters. They wrap a method's behaviour once and reuse the wrapper, so the per-call
cost is one extra Python frame per interceptor.

Order (outermost first, see ``standard_interceptors``): logging, metrics, auth, rate limit. The
outer two therefore see the final status of every call, including the UNAUTHENTICATED and
RESOURCE_EXHAUSTED answers of the inner two and codes set by ``context.abort``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from recgrpc.logs import request_id_var
from recgrpc.server.metrics import ServerMetrics, split_method

if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
# Probes and tooling must work without a token: Kubernetes' gRPC probe cannot send one.
PUBLIC_SERVICES = frozenset({HEALTH_SERVICE, *REFLECTION_SERVICES})

REQUEST_ID_KEY = "x-request-id"
AUTHORIZATION_KEY = "authorization"
# Printable ASCII without spaces: safe to echo into logs and metadata.
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")

Behaviour = Callable[[Any, grpc.ServicerContext], Any]
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class RpcInfo:
    """What the interceptors know about a method: names and gRPC type."""

    full_method: str
    service: str
    method: str
    grpc_type: str  # unary, server_stream, client_stream, bidi_stream

    @classmethod
    def of(cls, full_method: str, handler: _Handler) -> RpcInfo:
        service, method = split_method(full_method)
        kind = {
            (False, False): "unary",
            (False, True): "server_stream",
            (True, False): "client_stream",
            (True, True): "bidi_stream",
        }[(bool(handler.request_streaming), bool(handler.response_streaming))]
        return cls(full_method, service, method, kind)


def metadata_value(context: grpc.ServicerContext, key: str) -> str | None:
    """The first value of invocation metadata ``key`` (keys arrive lower-case)."""
    for item in context.invocation_metadata() or ():
        if item[0] == key:
            value = item[1]
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def final_code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    """The status the caller will see: the code set by abort/set_code, else OK or UNKNOWN."""
    # ServicerContext.code() exists at run time (grpc >= 1.38) but not in the type stubs.
    code: grpc.StatusCode | None = getattr(context, "code")()  # noqa: B009
    if code is None or (failed and code == grpc.StatusCode.OK):
        return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
    return code


class _WrappingInterceptor(_Interceptor):
    """Wraps each method's behaviour once; the wrapper is cached by method name."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._rebuild(handler, RpcInfo.of(method, handler))
        self._wrapped[method] = (handler, wrapped)  # a dict store is atomic; races only rewrap
        return wrapped

    def _rebuild(self, handler: _Handler, rpc: RpcInfo) -> _Handler:
        rebuilt: _Handler
        options: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            behaviour = self.wrap(handler.unary_unary, rpc, streaming=False)
            rebuilt = grpc.unary_unary_rpc_method_handler(behaviour, **options)
        elif handler.unary_stream is not None:
            behaviour = self.wrap(handler.unary_stream, rpc, streaming=True)
            rebuilt = grpc.unary_stream_rpc_method_handler(behaviour, **options)
        elif handler.stream_unary is not None:
            behaviour = self.wrap(handler.stream_unary, rpc, streaming=False)
            rebuilt = grpc.stream_unary_rpc_method_handler(behaviour, **options)
        elif handler.stream_stream is not None:
            behaviour = self.wrap(handler.stream_stream, rpc, streaming=True)
            rebuilt = grpc.stream_stream_rpc_method_handler(behaviour, **options)
        else:  # pragma: no cover - grpc always sets one of the four
            return handler
        return rebuilt

    def wrap(self, behaviour: Behaviour, rpc: RpcInfo, *, streaming: bool) -> Behaviour:
        raise NotImplementedError


class _GateInterceptor(_WrappingInterceptor):
    """Admits or refuses a call before it runs (``admit`` aborts to refuse)."""

    def __init__(self, exempt_services: Iterable[str]) -> None:
        super().__init__()
        self.exempt_services = frozenset(exempt_services)

    def admit(self, rpc: RpcInfo, context: grpc.ServicerContext) -> None:
        raise NotImplementedError

    def wrap(self, behaviour: Behaviour, rpc: RpcInfo, *, streaming: bool) -> Behaviour:
        if rpc.service in self.exempt_services:
            return behaviour
        admit = self.admit

        def gated(request: Any, context: grpc.ServicerContext) -> Any:
            admit(rpc, context)
            return behaviour(request, context)

        return gated


class _ObservingInterceptor(_WrappingInterceptor, Generic[S]):
    """Sees every call begin and end with its final status code (streams: when they finish)."""

    def begin(self, rpc: RpcInfo, context: grpc.ServicerContext) -> S:
        raise NotImplementedError

    def end(
        self, rpc: RpcInfo, context: grpc.ServicerContext, state: S, code: grpc.StatusCode
    ) -> None:
        raise NotImplementedError

    def wrap(self, behaviour: Behaviour, rpc: RpcInfo, *, streaming: bool) -> Behaviour:
        begin, end = self.begin, self.end

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            state = begin(rpc, context)
            try:
                response = behaviour(request, context)
            except BaseException:
                end(rpc, context, state, final_code(context, failed=True))
                raise
            if streaming:
                return self._observe_stream(response, rpc, context, state)
            end(rpc, context, state, final_code(context, failed=False))
            return response

        return observed

    def _observe_stream(
        self, responses: Iterator[Any], rpc: RpcInfo, context: grpc.ServicerContext, state: S
    ) -> Iterator[Any]:
        code = grpc.StatusCode.CANCELLED  # if the stream is closed before it ends
        try:
            yield from responses
            code = final_code(context, failed=False)
        except GeneratorExit:  # closed early (the caller went away): stays CANCELLED
            raise
        except BaseException:
            code = final_code(context, failed=True)
            raise
        finally:
            self.end(rpc, context, state, code)


class MetricsInterceptor(_ObservingInterceptor[float]):
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


class AccessLogInterceptor(_ObservingInterceptor[_CallLog]):
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


def load_tokens(path: str | Path) -> frozenset[str]:
    """Bearer tokens from a file: one per line; blank lines and ``#`` comments are ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    tokens = frozenset(
        line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
    )
    if not tokens:
        raise ValueError(f"auth tokens file {path} holds no tokens")
    return tokens


def bearer_token(context: grpc.ServicerContext) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, if one was sent."""
    header = metadata_value(context, AUTHORIZATION_KEY)
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenSet:
    """Accepted bearer tokens, kept only as SHA-256 digests (the gRPC API's and the dashboard's).

    ``accepts`` compares in constant time against every known digest, so timing reveals
    neither a token nor which one matched.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = tuple(_digest(t) for t in tokens if t)
        if not self._digests:
            raise ValueError("bearer-token authentication needs at least one token")

    def accepts(self, token: str) -> bool:
        presented = _digest(token)
        known = False
        for digest in self._digests:  # no early exit: constant time whatever matches
            known |= hmac.compare_digest(presented, digest)
        return known


class BearerTokenAuthInterceptor(_GateInterceptor):
    """Refuses calls without a known bearer token (``TokenSet``) with UNAUTHENTICATED."""

    def __init__(
        self, tokens: Iterable[str], exempt_services: Iterable[str] = PUBLIC_SERVICES
    ) -> None:
        super().__init__(exempt_services)
        self.tokens = TokenSet(tokens)

    def admit(self, rpc: RpcInfo, context: grpc.ServicerContext) -> None:
        token = bearer_token(context)
        if token is None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing bearer token: send metadata 'authorization: Bearer <token>'",
            )
            return
        if not self.tokens.accepts(token):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")


class TokenBuckets:
    """Token buckets per caller: ``rate`` tokens per second refill, at most ``burst`` banked.

    Holds at most ``max_callers`` buckets; the least recently seen are forgotten first (a
    forgotten caller starts again with a full bucket).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate limits need rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until a token is available."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                bucket = [self.burst, now]
                self._buckets[caller] = bucket
                if len(self._buckets) > self.max_callers:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(caller)
                bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return 0.0
            return (1.0 - bucket[0]) / self.rate


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.1:5123`` -> ``ipv4:10.0.0.1``: a caller reconnecting keeps its bucket."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


def caller_key(context: grpc.ServicerContext) -> str:
    """Who is calling: the bearer token's digest when one is sent, else the peer's address."""
    token = bearer_token(context)
    if token is not None:
        return "token:" + _digest(token).hex()[:32]
    return "peer:" + peer_host(context.peer())


class RateLimitInterceptor(_GateInterceptor):
    """Answers RESOURCE_EXHAUSTED when a caller's bucket is empty. Health checks are exempt."""

    def __init__(
        self, buckets: TokenBuckets, exempt_services: Iterable[str] = (HEALTH_SERVICE,)
    ) -> None:
        super().__init__(exempt_services)
        self.buckets = buckets

    def admit(self, rpc: RpcInfo, context: grpc.ServicerContext) -> None:
        wait = self.buckets.take(caller_key(context))
        if wait > 0:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit exceeded for this caller; retry in {wait:.3f}s",
            )


def standard_interceptors(
    metrics: ServerMetrics,
    *,
    access_log: logging.Logger | None = None,
    tokens: Iterable[str] | None = None,
    rate_limit_per_second: float = 0.0,
    rate_limit_burst: int = 100,
) -> list[_Interceptor]:
    """The server's chain, outermost first: logging, metrics, auth (if tokens), rate limit."""
    chain: list[_Interceptor] = [
        AccessLogInterceptor(access_log or logging.getLogger("recgrpc.access")),
        MetricsInterceptor(metrics),
    ]
    if tokens is not None:
        chain.append(BearerTokenAuthInterceptor(tokens))
    if rate_limit_per_second > 0:
        chain.append(RateLimitInterceptor(TokenBuckets(rate_limit_per_second, rate_limit_burst)))
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
    "TokenBuckets",
    "TokenSet",
    "bearer_token",
    "caller_key",
    "load_tokens",
    "peer_host",
    "standard_interceptors",
]
