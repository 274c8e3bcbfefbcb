"""Rate limits count the verified caller, not whatever token a call carries: without auth the
peer address, with auth the principal of a verified token; reflection and health are limited
per peer, and refused tokens are limited per peer too (no free token guessing)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recgrpc.config import Settings
from recgrpc.server import RunningServer, create_server
from recgrpc.server.admission import TokenSet
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc

CALLS = 40
BURST = 5


@pytest.fixture
def start(settings: Settings) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def run(**changes: object) -> RunningServer:
        # A slow refill: within the test, only the burst is admitted per bucket.
        limited = settings.replace(rate_limit_per_second=0.1, rate_limit_burst=BURST, **changes)
        running = create_server(limited)
        started.append(running)
        assert running.wait_ready(30)
        return running

    yield run
    for running in started:
        running.stop(grace=0.5)


def codes(call: Callable[[], object], times: int) -> Counter[grpc.StatusCode]:
    seen: Counter[grpc.StatusCode] = Counter()
    for _ in range(times):
        try:
            call()
            seen[grpc.StatusCode.OK] += 1
        except grpc.RpcError as exc:
            seen[exc.code()] += 1  # type: ignore[attr-defined]
    return seen


def random_bearer() -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {uuid.uuid4()}"),)


def recommend(
    channel: grpc.Channel, metadata: Callable[[], tuple[tuple[str, str], ...]]
) -> Callable[[], object]:
    stub = pb_grpc.RecommendationServiceStub(channel)
    return lambda: stub.GetRecommendations(
        pb.GetRecommendationsRequest(user_id="u1"), metadata=metadata(), timeout=5
    )


def test_without_auth_a_random_token_per_call_does_not_escape_the_peer_limit(
    start: Callable[..., RunningServer],
) -> None:
    running = start()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        seen = codes(recommend(channel, random_bearer), CALLS)
    assert seen[grpc.StatusCode.OK] == BURST, seen
    assert seen[grpc.StatusCode.RESOURCE_EXHAUSTED] == CALLS - BURST, seen


def test_with_auth_principals_have_own_buckets_and_public_and_refused_calls_are_per_peer(
    start: Callable[..., RunningServer], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice-token\nbob-token\ncarol-token\n")
    running = start(
        auth_tokens_file=str(tokens), auth_failures_per_second=0.1, auth_failure_burst=3
    )
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        alice = codes(recommend(channel, lambda: (("authorization", "Bearer alice-token"),)), 8)
        bob = codes(recommend(channel, lambda: (("authorization", "Bearer bob-token"),)), 8)
        assert (
            alice
            == bob
            == Counter({grpc.StatusCode.OK: BURST, grpc.StatusCode.RESOURCE_EXHAUSTED: 3})
        )

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)

        def list_services() -> object:
            ask = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            return list(reflect.ServerReflectionInfo(ask, metadata=random_bearer(), timeout=5))

        reflected = codes(list_services, 12)
        assert reflected[grpc.StatusCode.OK] == BURST, reflected

        guesses = codes(recommend(channel, random_bearer), CALLS)
        assert guesses[grpc.StatusCode.UNAUTHENTICATED] == 3, guesses
        assert guesses[grpc.StatusCode.RESOURCE_EXHAUSTED] == CALLS - 3, guesses
        # A valid token from the same address still gets in: refusals spend no principal's bucket.
        carol = codes(recommend(channel, lambda: (("authorization", "Bearer carol-token"),)), 1)
        assert carol == Counter({grpc.StatusCode.OK: 1})

    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        checks = codes(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5), 10)
        assert checks == Counter({grpc.StatusCode.OK: 10})  # probes stay far below their limit


def test_health_checks_are_limited_per_peer_at_their_own_rate(
    start: Callable[..., RunningServer],
) -> None:
    running = start(health_rate_limit_per_second=2.0)  # a burst of 4
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        checks = codes(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5), 30)
    assert checks[grpc.StatusCode.RESOURCE_EXHAUSTED] >= 20, checks


def test_token_set_names_the_principal_of_an_accepted_token_only() -> None:
    tokens = TokenSet(["alice-token", "bob-token"])
    alice, bob = tokens.principal("alice-token"), tokens.principal("bob-token")
    assert alice
    assert bob
    assert alice != bob
    assert tokens.principal("alice-token ") is None
    assert tokens.principal(str(uuid.uuid4())) is None
    assert tokens.accepts("bob-token")
    assert not tokens.accepts("")
