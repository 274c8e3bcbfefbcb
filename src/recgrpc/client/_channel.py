"""Channel set-up shared by both clients: retries, keepalive, credentials, metadata, deadlines.

Retries live in the channel's service config, so gRPC itself retries UNAVAILABLE with backoff,
for writes too: ``LogInteraction`` carries a client-made ``event_id`` and catalogue upserts are
idempotent, so a retried write never stores anything twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from recgrpc import __version__
from recgrpc.client._errors import ClientArgumentError, InternalError
from recgrpc.client._tracing import trace_headers
from recgrpc.v1 import catalog_pb2, recommendation_pb2

DEFAULT_TIMEOUT = 5.0
"""Seconds a call may take unless the client or the call says otherwise."""
DEFAULT_MAX_ATTEMPTS = 4
"""First try plus up to three retries of UNAVAILABLE (gRPC caps this at 5)."""

SERVICE_NAMES = (
    recommendation_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
)

Metadata = Mapping[str, str] | Iterable[tuple[str, str]]
"""Extra request headers: a mapping or ``(key, value)`` pairs; keys lower-case ASCII."""


def service_config(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> str:
    """The ``grpc.service_config`` JSON: retry UNAVAILABLE for every method of both services."""
    if not 1 <= max_attempts <= 5:
        raise ClientArgumentError("max_attempts", "must be within 1..5 (gRPC's own limit)")
    method_config: dict[str, Any] = {"name": [{"service": name} for name in SERVICE_NAMES]}
    if max_attempts > 1:
        method_config["retryPolicy"] = {
            "maxAttempts": max_attempts,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps(
        {
            "methodConfig": [method_config],
            # Stop retrying when most calls fail, so an outage is not multiplied by retries.
            "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
        }
    )


def channel_options(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> list[tuple[str, Any]]:
    """Options for a channel to a recgrpc server; use them when building your own channel."""
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(max_attempts)),
        # The server accepts a ping every 10 s; 30 s finds a dead connection (a restarted pod
        # behind a load balancer) well before the next call would hang on it.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.primary_user_agent", f"recgrpc-python/{__version__}"),
    ]


def _pairs(metadata: Metadata | None) -> tuple[tuple[str, str], ...]:
    if metadata is None:
        return ()
    if isinstance(metadata, Mapping):
        return tuple(metadata.items())
    return tuple((key, value) for key, value in metadata)


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """How to open a channel: target, options and, for TLS, the channel credentials."""

    target: str
    options: tuple[tuple[str, Any], ...]
    credentials: grpc.ChannelCredentials | None


@dataclass(frozen=True, slots=True)
class CallDefaults:
    """What every call of one client carries: a deadline and headers (the token when insecure)."""

    timeout: float | None
    metadata: tuple[tuple[str, str], ...]

    def timeout_for(self, timeout: float | None) -> float | None:
        chosen = self.timeout if timeout is None else timeout
        if chosen is not None and not _positive_seconds(chosen):
            raise ClientArgumentError("timeout", "must be a positive number of seconds")
        return chosen

    def metadata_for(self, metadata: Metadata | None) -> tuple[tuple[str, str], ...]:
        """The client's headers, the call's, then the caller's trace context (if any)."""
        return self.metadata + _pairs(metadata) + trace_headers()


def _positive_seconds(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def plan_client(
    target: str | None,
    *,
    channel_given: bool,
    timeout: float | None,
    tls: bool,
    root_certificates: bytes | None,
    token: str | None,
    metadata: Metadata | None,
    max_attempts: int | None,
    options: Sequence[tuple[str, Any]],
) -> tuple[ChannelPlan | None, CallDefaults]:
    """Check a client's arguments; the channel plan is ``None`` when the caller gave a channel."""
    if timeout is not None and not _positive_seconds(timeout):
        raise ClientArgumentError(
            "timeout", "must be a positive number of seconds, or None for no deadline"
        )
    if token is not None and not token:
        raise ClientArgumentError("token", "must not be empty")
    headers = _pairs(metadata)
    if channel_given:
        if target is not None or tls or root_certificates is not None or options:
            raise ClientArgumentError(
                "channel", "pass either a channel or a target with channel settings, not both"
            )
        if max_attempts is not None:
            raise ClientArgumentError(
                "max_attempts", "shapes a new channel; use channel_options() for yours"
            )
        # We cannot tell whether the caller's channel is secure: send the token as a header.
        if token:
            headers = (("authorization", f"Bearer {token}"), *headers)
        return None, CallDefaults(timeout, headers)
    if not target:
        raise ClientArgumentError(
            "target", "a target such as 'localhost:50051' (or a channel) is required"
        )
    secure = tls or root_certificates is not None
    credentials: grpc.ChannelCredentials | None = None
    if secure:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        if token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token)
            )
    elif token:
        # Call credentials need a secure channel; on a plaintext (local) channel the same
        # header goes with each call instead.
        headers = (("authorization", f"Bearer {token}"), *headers)
    all_options = (*channel_options(max_attempts or DEFAULT_MAX_ATTEMPTS), *options)
    return ChannelPlan(target, tuple(all_options), credentials), CallDefaults(timeout, headers)


# grpc.health.v1 messages, hand-encoded so the client does not need grpcio-health-checking.
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
HEALTH_SERVING = 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_health_request(service: str) -> bytes:
    """``HealthCheckRequest{service}``: field 1, length-delimited."""
    name = service.encode()
    return b"\x0a" + _varint(len(name)) + name if name else b""


def decode_health_status(data: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, varint); other fields are skipped."""
    status, pos = 0, 0

    def read_varint() -> int:
        nonlocal pos
        result, shift = 0, 0
        while True:
            if pos >= len(data):
                raise InternalError("the server sent a truncated health response")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while pos < len(data):
        key = read_varint()
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value = read_varint()
            if field == 1:
                status = value
        elif wire_type == 2:
            pos += read_varint()
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise InternalError(f"unexpected wire type {wire_type} in the health response")
    return status
