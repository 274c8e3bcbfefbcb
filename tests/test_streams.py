"""Long-lived streams from anonymous callers (health Watch, server reflection) cannot starve the
RPC threads: the health check and authenticated calls keep answering, streams per peer are
capped, idle reflection streams are cancelled, and Watch still reports status changes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recgrpc.config import Settings
from recgrpc.server import RunningServer, create_server
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc

TOKEN = "stream-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def start(settings: Settings, tmp_path: Path) -> Iterator[object]:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    started: list[RunningServer] = []

    def run(**changes: object) -> RunningServer:
        running = create_server(settings.replace(auth_tokens_file=str(tokens), **changes))
        started.append(running)
        assert running.wait_ready(30)
        return running

    yield run
    for running in started:
        running.stop(grace=0.5)


def own_channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def silent(stop: threading.Event) -> Iterator[reflection_pb2.ServerReflectionRequest]:
    stop.wait()  # connects, then never asks anything
    yield from ()


def list_services() -> Iterator[reflection_pb2.ServerReflectionRequest]:
    yield reflection_pb2.ServerReflectionRequest(list_services="")


def test_idle_watch_and_reflection_streams_leave_health_and_calls_answering(
    start: object,
) -> None:
    running = start(max_workers=4, stream_limit_per_peer=100)  # type: ignore[operator]
    target = f"127.0.0.1:{running.port}"
    stop = threading.Event()
    channels = [own_channel(target) for _ in range(4)]
    streams = []
    try:
        # Three times the RPC threads in unread Watch streams, as many idle reflection ones.
        for k in range(12):
            channel = channels[k % len(channels)]
            streams.append(
                health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            )
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            streams.append(reflect.ServerReflectionInfo(silent(stop)))
        with own_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            rec = pb_grpc.RecommendationServiceStub(channel)
            for _ in range(10):
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == SERVING
                listed = rec.GetRecommendations(
                    pb.GetRecommendationsRequest(user_id="u1"), metadata=AUTH, timeout=5
                )
                assert listed.recset_id
            # The Watch streams were served, not parked: each got its first answer.
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
            assert next(watch).status == SERVING
            watch.cancel()
        assert not any(s.done() for s in streams[::2]), "a Watch stream was closed"
    finally:
        stop.set()
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()


def test_streams_per_peer_are_capped_and_freed_when_closed(start: object) -> None:
    running = start(stream_limit_per_peer=2)  # type: ignore[operator]
    with own_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        first = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        second = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(first).status == SERVING
        assert next(second).status == SERVING
        third = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            next(third)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Unary calls are not streams: the health check still answers.
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        first.cancel()

        def admitted() -> bool:
            again = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
            try:
                return next(again).status == SERVING
            except grpc.RpcError:
                return False
            finally:
                again.cancel()

        assert any(admitted() for _ in range(50)), "a closed stream's place never came back"
        second.cancel()


def test_idle_reflection_stream_is_cancelled_and_reflection_still_answers(
    start: object,
) -> None:
    running = start(stream_idle_seconds=0.3, reflection_workers=1)  # type: ignore[operator]
    stop = threading.Event()
    with own_channel(f"127.0.0.1:{running.port}") as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        idle = reflect.ServerReflectionInfo(silent(stop), timeout=20)
        with pytest.raises(grpc.RpcError) as ended:
            next(idle)  # the server cancels it long before the 20 s deadline
        assert ended.value.code() == grpc.StatusCode.CANCELLED
        stop.set()
        # The one reflection thread is free again for a caller that asks something.
        answers = list(reflect.ServerReflectionInfo(list_services(), timeout=10))
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"recgrpc.v1.RecommendationService", "grpc.health.v1.Health"} <= names


def test_watch_reports_not_serving_on_graceful_shutdown(start: object) -> None:
    running = start()  # type: ignore[operator]
    with own_channel(f"127.0.0.1:{running.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=20
        )
        assert next(watch).status == SERVING
        stopper = threading.Thread(target=running.stop, kwargs={"grace": 0.5, "drain_delay": 1})
        stopper.start()
        assert next(watch).status == NOT_SERVING
        stopper.join(10)
