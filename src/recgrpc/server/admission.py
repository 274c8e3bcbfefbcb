"""Who may call, and how much: bearer-token authentication, per-caller rate limits and
per-peer limits on long-lived streams.

The caller a rate limit counts is the principal a verified token stands for when
authentication is on, and the peer address otherwise (and for the services that need no
token, and for calls whose token was refused, which are limited per address on their own).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import grpc

from recgrpc.server.interception import (
    Behaviour,
    GateInterceptor,
    RpcInfo,
    WrappingInterceptor,
    metadata_value,
    on_end,
)

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
# Probes and tooling must work without a token: Kubernetes' gRPC probe cannot send one.
PUBLIC_SERVICES = frozenset({HEALTH_SERVICE, *REFLECTION_SERVICES})
AUTHORIZATION_KEY = "authorization"
STREAMING_TYPES = frozenset({"server_stream", "bidi_stream"})


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

    ``principal`` and ``accepts`` compare in constant time against every known digest, so
    timing reveals neither a token nor which one matched.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = tuple(_digest(t) for t in tokens if t)
        if not self._digests:
            raise ValueError("bearer-token authentication needs at least one token")

    def principal(self, token: str) -> str | None:
        """Who ``token`` stands for (a prefix of its digest), or None when it is not accepted."""
        presented = _digest(token)
        matched = b""
        for digest in self._digests:  # no early exit: constant time whatever matches
            if hmac.compare_digest(presented, digest):
                matched = digest
        return matched.hex()[:16] if matched else None

    def accepts(self, token: str) -> bool:
        return self.principal(token) is not None


# The verified caller of the running call, set by the auth interceptor for the rate limiter
# inside it. gRPC runs each call in a context of its own, so it never leaks between calls.
principal_var: ContextVar[str] = ContextVar("recgrpc_principal", default="")


class BearerTokenAuthInterceptor(GateInterceptor):
    """Refuses calls without a known bearer token (``TokenSet``) with UNAUTHENTICATED.

    With ``failures``, each refused call also spends a token of its peer address's bucket;
    when that is empty the peer hears RESOURCE_EXHAUSTED instead, so tokens cannot be guessed
    at line rate. A valid token is always admitted, whatever its address's failures.
    """

    def __init__(
        self,
        tokens: Iterable[str],
        exempt_services: Iterable[str] = PUBLIC_SERVICES,
        *,
        failures: TokenBuckets | None = None,
    ) -> None:
        super().__init__(frozenset(exempt_services))
        self.tokens = TokenSet(tokens)
        self.failures = failures

    def admit(self, rpc: RpcInfo, context: grpc.ServicerContext) -> None:
        token = bearer_token(context)
        principal = None if token is None else self.tokens.principal(token)
        if principal is not None:
            principal_var.set(principal)
            return
        if self.failures is not None:
            wait = self.failures.take(peer_host(context.peer()))
            if wait > 0:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many failed authentications from this address; retry in {wait:.3f}s",
                )
        if token is None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing bearer token: send metadata 'authorization: Bearer <token>'",
            )
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
    """Who is calling: the principal the auth interceptor verified, else the peer's address.

    Never an unverified token: a fresh random token per call would be a fresh bucket.
    """
    principal = principal_var.get()
    if principal:
        return "principal:" + principal
    return "peer:" + peer_host(context.peer())


class RateLimitInterceptor(GateInterceptor):
    """Answers RESOURCE_EXHAUSTED when a caller's bucket is empty (``caller_key``).

    ``only_services`` limits it to those services, keyed by peer address alone (the health
    service's own per-peer limit); otherwise every service but ``exempt_services``.
    """

    def __init__(
        self,
        buckets: TokenBuckets,
        exempt_services: Iterable[str] = (HEALTH_SERVICE,),
        *,
        only_services: Iterable[str] | None = None,
    ) -> None:
        super().__init__(frozenset(exempt_services))
        self.buckets = buckets
        self.only_services = None if only_services is None else frozenset(only_services)

    def wrap(self, behaviour: Behaviour, rpc: RpcInfo, *, streaming: bool) -> Behaviour:
        if self.only_services is not None and rpc.service not in self.only_services:
            return behaviour
        return super().wrap(behaviour, rpc, streaming=streaming)

    def admit(self, rpc: RpcInfo, context: grpc.ServicerContext) -> None:
        if self.only_services is None:
            key = caller_key(context)
        else:
            key = "peer:" + peer_host(context.peer())
        wait = self.buckets.take(key)
        if wait > 0:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit exceeded for this caller; retry in {wait:.3f}s",
            )


class StreamLimitInterceptor(WrappingInterceptor):
    """At most ``per_peer`` response-streaming calls (health Watch, reflection) open at once
    from one peer address; more are refused with RESOURCE_EXHAUSTED. Unary calls pass."""

    def __init__(self, per_peer: int) -> None:
        super().__init__()
        if per_peer < 1:
            raise ValueError("stream limits need per_peer >= 1")
        self.per_peer = per_peer
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def open_streams(self, peer: str) -> int:
        with self._lock:
            return self._open[peer_host(peer)]

    def wrap(self, behaviour: Behaviour, rpc: RpcInfo, *, streaming: bool) -> Behaviour:
        if rpc.grpc_type not in STREAMING_TYPES:
            return behaviour

        def limited(request: Any, context: grpc.ServicerContext, *send: Any) -> Any:
            peer = peer_host(context.peer())
            with self._lock:
                admitted = self._open[peer] < self.per_peer
                if admitted:
                    self._open[peer] += 1
            if not admitted:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"at most {self.per_peer} open streams per caller; close one and retry",
                )
            on_end(context, lambda: self._release(peer))
            return behaviour(request, context, *send)

        return limited

    def _release(self, peer: str) -> None:
        with self._lock:
            self._open[peer] -= 1
            if self._open[peer] <= 0:
                del self._open[peer]


__all__ = [
    "HEALTH_SERVICE",
    "PUBLIC_SERVICES",
    "REFLECTION_SERVICES",
    "BearerTokenAuthInterceptor",
    "RateLimitInterceptor",
    "StreamLimitInterceptor",
    "TokenBuckets",
    "TokenSet",
    "bearer_token",
    "caller_key",
    "load_tokens",
    "peer_host",
    "principal_var",
]
