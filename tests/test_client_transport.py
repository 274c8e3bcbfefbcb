"""The typed client's transport against real servers: unavailability, retries, deadlines,
credentials (tokens, TLS), rate limits and channel ownership."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from recgrpc.client import (
    AsyncRecommendationClient,
    ClientArgumentError,
    DeadlineExceededError,
    InvalidArgumentError,
    Item,
    RecGrpcError,
    RecommendationClient,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    User,
    channel_options,
)
from recgrpc.server import RunningServer
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc
from tests.rpc import closed_port, self_signed, target
from tests.servers import Faults, start_server

__all__ = ["start_server"]  # the fixture this module borrows


def test_unavailable_when_nothing_listens() -> None:
    address = f"127.0.0.1:{closed_port()}"
    with RecommendationClient(address, timeout=10) as client:
        with pytest.raises(UnavailableError) as down:
            client.get_recommendations("alice")
        assert down.value.code is grpc.StatusCode.UNAVAILABLE
        assert not client.wait_until_serving(0.3)

    async def scenario() -> None:
        async with AsyncRecommendationClient(address, timeout=10) as client:
            with pytest.raises(UnavailableError):
                await client.log_interaction("alice", "i1", "view")

    asyncio.run(scenario())


def test_wait_until_serving_waits_for_a_late_server(
    start_server: Callable[..., RunningServer],
) -> None:
    port = closed_port()
    late = threading.Timer(0.5, start_server, kwargs={"port": port})
    late.start()
    try:
        with RecommendationClient(f"127.0.0.1:{port}") as client:
            assert client.wait_until_serving(20)
            assert client.get_recommendations("alice").recset_id
    finally:
        late.join()


# -- retries, deadlines --------------------------------------------------------------------


def test_unavailable_is_retried_with_the_same_event_id(
    start_server: Callable[..., RunningServer],
) -> None:
    faults = Faults("LogInteraction", failures=2)
    running = start_server(faults)
    with RecommendationClient(target(running)) as client:
        client.upsert_items([Item("i1")])
        logged = client.log_interaction("alice", "i1", "purchase")
        assert not logged.duplicate
        sent = [pb.LogInteractionRequest.FromString(raw).event_id for raw in faults.requests]
        assert sent == [logged.event_id] * 3
        assert [m.get("grpc-previous-rpc-attempts") for m in faults.metadata] == [None, "1", "2"]
        # The retried write was stored once.
        assert client.log_interaction("alice", "i1", "purchase", event_id=logged.event_id).duplicate

        # Refusals are the caller's fault: never retried.
        faults.requests.clear()
        with pytest.raises(InvalidArgumentError):
            client.log_interaction("", "i1", "view")
        assert len(faults.requests) == 1

    faults = Faults("LogInteraction", failures=5)
    running = start_server(faults)
    with RecommendationClient(target(running), max_attempts=2) as client:
        with pytest.raises(UnavailableError) as down:
            client.log_interaction("alice", "i1", "view")
        assert down.value.message == "injected failure 2"
        assert len(faults.requests) == 2


def test_async_client_retries_too(start_server: Callable[..., RunningServer]) -> None:
    faults = Faults("UpsertUsers", failures=1)
    running = start_server(faults)

    async def scenario() -> int:
        async with AsyncRecommendationClient(target(running)) as client:
            return await client.upsert_users([User("alice")])

    assert asyncio.run(scenario()) == 1
    assert len(faults.requests) == 2


def test_deadlines_default_and_per_call(start_server: Callable[..., RunningServer]) -> None:
    slow = Faults("GetRecommendations", delay=1.0)
    running = start_server(slow)
    with RecommendationClient(target(running), timeout=0.2) as client:
        # Connect first, so that the short deadline covers only the slow handler: on a busy
        # machine connecting alone can take 0.2 s, and the request would never reach it.
        client.check_health(timeout=5)
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError) as late:
            client.get_recommendations("alice")
        assert time.monotonic() - started < 0.9
        assert late.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(slow.requests) == 1  # a deadline is not retried
        # A longer per-call timeout wins over the client's default.
        assert client.get_recommendations("alice", timeout=5).recset_id

    async def scenario() -> None:
        async with AsyncRecommendationClient(target(running)) as client:
            with pytest.raises(DeadlineExceededError):
                await client.get_recommendations("alice", timeout=0.2)

    asyncio.run(scenario())


# -- credentials and metadata --------------------------------------------------------------


def test_token_and_metadata_reach_the_server(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    seen = Faults("GetRecommendations")
    running = start_server(seen, auth_tokens_file=str(tokens))
    with RecommendationClient(
        target(running), token="s3cret", metadata={"x-caller": "bff"}
    ) as client:
        client.get_recommendations("alice", call_metadata={"x-request-id": "req-42"})
    headers = seen.metadata[-1]
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-caller"] == "bff"
    assert headers["x-request-id"] == "req-42"
    assert headers["user-agent"].startswith("recgrpc-python/")

    with RecommendationClient(target(running)) as anonymous:
        with pytest.raises(UnauthenticatedError):
            anonymous.get_recommendations("alice")
        assert anonymous.check_health()  # health stays open for probes
    with (
        RecommendationClient(target(running), token="wrong") as impostor,
        pytest.raises(UnauthenticatedError),
    ):
        impostor.get_recommendations("alice")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl command line tool."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    return self_signed(tmp_path)


def test_tls_with_a_bearer_token(
    start_server: Callable[..., RunningServer], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = certificate
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    seen = Faults("GetRecommendations")
    running = start_server(
        seen, tls_cert_file=str(cert), tls_key_file=str(key), auth_tokens_file=str(tokens)
    )
    roots = cert.read_bytes()
    with RecommendationClient(target(running), root_certificates=roots, token="s3cret") as client:
        assert client.get_recommendations("alice").recset_id
    # Over TLS the token travels as call credentials.
    assert seen.metadata[-1]["authorization"] == "Bearer s3cret"

    async def scenario() -> str:
        async with AsyncRecommendationClient(
            target(running), root_certificates=roots, token="s3cret"
        ) as client:
            return (await client.get_recommendations("alice")).recset_id

    assert asyncio.run(scenario())

    with (
        RecommendationClient(target(running), root_certificates=roots) as anonymous,
        pytest.raises(UnauthenticatedError),
    ):
        anonymous.get_recommendations("alice")
    # A plaintext client cannot talk to a TLS server, and a retry does not help.
    with (
        RecommendationClient(target(running), token="s3cret", timeout=5) as plaintext,
        pytest.raises(UnavailableError),
    ):
        plaintext.get_recommendations("alice")


def test_rate_limit_is_resource_exhausted(start_server: Callable[..., RunningServer]) -> None:
    running = start_server(rate_limit_per_second=0.1, rate_limit_burst=1)
    with RecommendationClient(target(running)) as client:
        client.get_recommendations("alice")
        with pytest.raises(ResourceExhaustedError) as limited:
            client.get_recommendations("alice")
        assert isinstance(limited.value, RecGrpcError)
        assert "rate limit" in limited.value.message


# -- channel ownership ---------------------------------------------------------------------


def test_a_given_channel_stays_open(server: RunningServer) -> None:
    with grpc.insecure_channel(target(server), options=channel_options()) as channel:
        with RecommendationClient(channel=channel) as client:
            assert client.get_recommendations("alice").recset_id
        stub = pb_grpc.RecommendationServiceStub(channel)
        response = stub.GetRecommendations(pb.GetRecommendationsRequest(user_id="alice"), timeout=5)
        assert response.recset_id

    owned = RecommendationClient(target(server))
    with owned:
        owned.get_recommendations("alice")
    with pytest.raises(ValueError, match="closed"):
        owned.get_recommendations("alice")


def test_a_given_aio_channel_stays_open(server: RunningServer) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            async with AsyncRecommendationClient(channel=channel) as client:
                assert (await client.get_recommendations("alice")).recset_id
            stub = pb_grpc.RecommendationServiceStub(channel)
            response = await stub.GetRecommendations(
                pb.GetRecommendationsRequest(user_id="alice"), timeout=5
            )
            assert response.recset_id

    asyncio.run(scenario())


def test_constructor_refuses_contradictions() -> None:
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(ClientArgumentError, match="either a channel or a target"):
            RecommendationClient("127.0.0.1:1", channel=channel)
        with pytest.raises(ClientArgumentError, match="max_attempts"):
            RecommendationClient(channel=channel, max_attempts=2)
    with pytest.raises(ClientArgumentError, match="target"):
        RecommendationClient()
    with pytest.raises(ClientArgumentError, match="max_attempts"):
        RecommendationClient("127.0.0.1:1", max_attempts=6)
    with pytest.raises(ClientArgumentError, match="timeout"):
        RecommendationClient("127.0.0.1:1", timeout=-1)
