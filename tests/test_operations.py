"""Operating the server: access logs, bearer tokens, rate limits, TLS.

Every test runs a real server on a free loopback port and talks to it over gRPC (through the
published client where it has the option, through raw stubs where the test needs the wire).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recgrpc.client import (
    Item,
    RecommendationClient,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from recgrpc.config import Settings
from recgrpc.logs import JsonFormatter
from recgrpc.server import RunningServer, create_server
from recgrpc.server.interceptors import TokenBuckets, load_tokens, peer_host
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc
from tests.rpc import REC_SERVICE, self_signed
from tests.servers import start_server

__all__ = ["start_server"]  # the fixture this module borrows


# -- access logs -----------------------------------------------------------------------------


def test_access_log_has_method_code_duration_peer_and_request_id(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="recgrpc.access")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.RecommendationServiceStub(channel)
        _, call = stub.GetRecommendations.with_call(
            pb.GetRecommendationsRequest(user_id="u1"),
            metadata=[("x-request-id", "req-abc-123"), ("authorization", "Bearer s3cret-tok")],
            timeout=5,
        )
        assert ("x-request-id", "req-abc-123") in tuple(call.trailing_metadata())
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetRecommendations(
                pb.GetRecommendationsRequest(user_id="u1", limit=-1),
                metadata=[("x-request-id", "x" * 500)],  # too long: a fresh one is made
                timeout=5,
            )
        made = dict(failed.value.trailing_metadata())["x-request-id"]
        assert len(made) == 32

    records = [r for r in caplog.records if r.name == "recgrpc.access"]
    by_id = {r.request_id: r for r in records}  # type: ignore[attr-defined]
    ok, bad = by_id["req-abc-123"], by_id[made]
    assert ok.method == "/recgrpc.v1.RecommendationService/GetRecommendations"  # type: ignore[attr-defined]
    assert ok.code == "OK"  # type: ignore[attr-defined]
    assert bad.code == "INVALID_ARGUMENT"  # type: ignore[attr-defined]
    assert ok.duration_ms > 0  # type: ignore[attr-defined]
    assert ok.peer.startswith("ipv4:127.0.0.1:")  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter().format(ok))
    assert {"method", "code", "duration_ms", "peer", "request_id", "time", "level"} <= set(line)
    assert line["request_id"] == "req-abc-123"
    assert "s3cret-tok" not in caplog.text
    assert all("s3cret-tok" not in JsonFormatter().format(r) for r in caplog.records)


# -- authentication ---------------------------------------------------------------------------


def test_bearer_tokens(start_server: object, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# callers\ntoken-for-bff\n\ntoken-for-jobs\n")
    assert load_tokens(tokens) == {"token-for-bff", "token-for-jobs"}
    running = start_server(auth_tokens_file=str(tokens))
    target = f"127.0.0.1:{running.port}"

    with RecommendationClient(target, max_attempts=1) as anonymous:
        with pytest.raises(UnauthenticatedError, match="missing bearer token"):
            anonymous.get_recommendations("u1")
        # The health service stays open: Kubernetes probes cannot send a token.
        assert anonymous.check_health()
    with RecommendationClient(target, token="token-for-intruder", max_attempts=1) as wrong:
        with pytest.raises(UnauthenticatedError, match="invalid bearer token"):
            wrong.get_recommendations("u1")
        with pytest.raises(UnauthenticatedError):
            wrong.upsert_items([Item(item_id="i1")])
    with RecommendationClient(target, token="token-for-jobs") as right:
        assert right.upsert_items([Item(item_id="i1")]) == 1
        assert right.get_recommendations("u1").recset_id

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.RecommendationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetRecommendations(
                pb.GetRecommendationsRequest(user_id="u1"),
                metadata=[("authorization", "Basic dG9rZW4tZm9yLWJmZjo=")],
                timeout=5,
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING

    refusals = running.metrics.handled.labels(
        "unary", REC_SERVICE, "GetRecommendations", "UNAUTHENTICATED"
    )
    assert refusals._value.get() == 3


def test_missing_tokens_file_content_is_refused(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "tokens"
    empty.write_text("# nobody yet\n")
    with pytest.raises(ValueError, match="holds no tokens"):
        create_server(settings.replace(auth_tokens_file=str(empty)))


# -- rate limits ------------------------------------------------------------------------------


def test_rate_limit_per_caller(start_server: object, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("greedy\npolite\n")
    running = start_server(
        auth_tokens_file=str(tokens), rate_limit_per_second=0.5, rate_limit_burst=3
    )
    target = f"127.0.0.1:{running.port}"
    with RecommendationClient(target, token="greedy", max_attempts=1) as greedy:
        for _ in range(3):
            greedy.get_recommendations("u1")
        with pytest.raises(ResourceExhaustedError, match="rate limit exceeded"):
            greedy.get_recommendations("u1")
        for _ in range(5):  # health checks are never limited
            assert greedy.check_health()
    with RecommendationClient(target, token="polite", max_attempts=1) as polite:
        assert polite.get_recommendations("u1").recset_id  # its own bucket


def test_token_bucket_refills_at_the_configured_rate() -> None:
    now = [100.0]
    buckets = TokenBuckets(rate=2.0, burst=2, clock=lambda: now[0], max_callers=2)
    assert [buckets.take("a"), buckets.take("a")] == [0, 0]
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("a") == 0
    assert buckets.take("a") > 0
    assert [buckets.take("b"), buckets.take("c")] == [0, 0]  # "a" is forgotten: at most 2
    assert buckets.take("a") == 0
    assert peer_host("ipv4:10.1.2.3:50123") == "ipv4:10.1.2.3"
    assert peer_host("ipv6:[::1]:50123") == "ipv6:[::1]"


def test_tls_with_token(start_server: object, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text("tls-token\n")
    running = start_server(
        tls_cert_file=str(cert), tls_key_file=str(key), auth_tokens_file=str(tokens)
    )
    target = f"127.0.0.1:{running.port}"
    root = cert.read_bytes()
    # Over TLS the token travels as call credentials.
    with RecommendationClient(target, root_certificates=root, token="tls-token") as client:
        assert client.upsert_items([Item(item_id="i1")]) == 1
        assert client.get_recommendations("u1").recset_id
    with (
        RecommendationClient(target, root_certificates=root, max_attempts=1) as no_token,
        pytest.raises(UnauthenticatedError),
    ):
        no_token.get_recommendations("u1")
    # A plaintext client cannot talk to a TLS port.
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
