"""OpenTelemetry traces through a real server: the span tree of a call, continued from the typed
client's ``traceparent``, the group commit's span, and export over OTLP to a collector."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from recgrpc.client import (
    AsyncRecommendationClient,
    InvalidArgumentError,
    NotFoundError,
    RecommendationClient,
)
from recgrpc.config import Settings
from recgrpc.db import Database
from recgrpc.jobs.train import train
from recgrpc.server import RunningServer, create_server
from tests.conftest import BACKENDS, module_database_url
from tests.recommender_data import load, taste_data

GET = "recgrpc.v1.RecommendationService/GetRecommendations"
LOG = "recgrpc.v1.RecommendationService/LogInteraction"
USER = "u000"


@dataclass
class TracedWorld:
    server: RunningServer
    exporter: InMemorySpanExporter
    caller: trace.Tracer
    """The calling service's tracer (a BFF): its spans are the parents of the server's."""
    target: str
    model_version: str


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TracedWorld]:
    """A trained model served with an in-memory span exporter, shared by this module's tests."""
    url = module_database_url(request, tmp_path_factory, "tracing")
    settings = Settings(database_url=url, host="127.0.0.1", port=0, metrics_port=0)
    db = Database(url)
    load(db, taste_data(n_users=60, n_items=40))
    version = train(db, settings, progress=False, epochs=5).version
    db.dispose()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = create_server(settings, tracer_provider=provider)
    assert server.wait_ready(30)
    try:
        yield TracedWorld(
            server, exporter, provider.get_tracer("bff"), f"127.0.0.1:{server.port}", version
        )
    finally:
        server.stop(grace=1)
        provider.shutdown()


@pytest.fixture
def traced(world: TracedWorld) -> TracedWorld:
    world.exporter.clear()
    # Every test's first call reads and ranks afresh (a cached context's memo would let a call
    # skip scoring: model.user_memo), so its spans show each step.
    world.server.handlers.contexts.clear()
    return world


def server_span(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def children_of(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    parent_id = parent.context.span_id
    kids = [s for s in spans if s.parent is not None and s.parent.span_id == parent_id]
    return sorted(kids, key=lambda s: s.start_time or 0)


def all_attribute_values(spans: tuple[ReadableSpan, ...]) -> list[str]:
    return [str(v) for s in spans for v in (s.attributes or {}).values()]


def test_get_recommendations_is_one_server_span_under_the_callers_span(
    traced: TracedWorld,
) -> None:
    with (
        RecommendationClient(traced.target) as client,
        traced.caller.start_as_current_span("GET /home") as caller_span,
    ):
        recs = client.get_recommendations(
            USER, algorithm="HYBRID", limit=5, call_metadata={"x-request-id": "home-1"}
        )
    assert recs.model_version == traced.model_version  # personalised: the model scored
    spans = traced.exporter.get_finished_spans()
    server = server_span(spans, GET)
    assert server.kind == trace.SpanKind.SERVER
    # The parent came through the call's metadata (traceparent), not through this process.
    assert server.parent is not None
    assert server.parent.is_remote
    assert server.parent.span_id == caller_span.get_span_context().span_id
    assert server.context.trace_id == caller_span.get_span_context().trace_id
    attributes = dict(server.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == "recgrpc.v1.RecommendationService"
    assert attributes["rpc.method"] == "GetRecommendations"
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert attributes["recgrpc.request_id"] == "home-1"
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert server.status.status_code == trace.StatusCode.UNSET

    children = children_of(spans, server)
    names = [s.name for s in children]
    # The impression is written behind the reply (server.impressions): not part of the call.
    assert names == ["recgrpc.user_context", "recgrpc.score", "recgrpc.rerank"]
    score, rerank = children[1], children[2]
    assert (score.attributes or {})["recgrpc.algorithm"] == "HYBRID"
    assert (rerank.attributes or {})["recgrpc.algorithm"] == "HYBRID"
    for child in children:
        assert child.context.trace_id == server.context.trace_id
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time  # type: ignore[operator]
    # The caller's span is the only other one: nothing is traced twice or left dangling.
    assert len(spans) == 1 + len(children) + 1
    # User ids never reach a span (traces outlive DeleteUser in the collector).
    assert not [v for v in all_attribute_values(spans) if USER in v]


def test_log_interaction_shows_its_group_commit(traced: TracedWorld) -> None:
    with (
        RecommendationClient(traced.target) as client,
        traced.caller.start_as_current_span("POST /click") as caller_span,
    ):
        logged = client.log_interaction(USER, "i001", "click")
    assert not logged.duplicate
    spans = traced.exporter.get_finished_spans()
    server = server_span(spans, LOG)
    assert server.parent is not None
    assert server.parent.span_id == caller_span.get_span_context().span_id
    (commit,) = children_of(spans, server)
    assert commit.name == "recgrpc.group_commit"
    assert dict(commit.attributes or {}) == {
        "recgrpc.writer": "interaction-writer",
        "recgrpc.batch_size": 1,  # a lone event commits at once, in a transaction of its own
    }


def test_concurrent_events_report_the_batches_they_shared(traced: TracedWorld) -> None:
    calls = 24
    barrier = threading.Barrier(calls)
    with RecommendationClient(traced.target) as client:

        def log(n: int) -> None:
            barrier.wait(timeout=10)
            client.log_interaction(f"u{n % 20:03d}", f"i{n % 40:03d}", "view")

        with futures.ThreadPoolExecutor(calls) as pool:
            list(pool.map(log, range(calls)))
    spans = traced.exporter.get_finished_spans()
    commits = [s for s in spans if s.name == "recgrpc.group_commit"]
    assert len(commits) == calls
    # Each span says how many events its transaction held: a batch of k is reported k times.
    sizes = [int((s.attributes or {})["recgrpc.batch_size"]) for s in commits]
    assert all(sizes.count(k) % k == 0 for k in set(sizes)), sizes


def test_the_asyncio_client_propagates_the_callers_context(traced: TracedWorld) -> None:
    async def call() -> trace.SpanContext:
        async with AsyncRecommendationClient(traced.target) as client:
            with traced.caller.start_as_current_span("async GET /home") as span:
                await client.get_recommendations(USER, limit=3)
                return span.get_span_context()

    caller = asyncio.run(call())
    server = server_span(traced.exporter.get_finished_spans(), GET)
    assert server.parent is not None
    assert (server.parent.trace_id, server.parent.span_id) == (caller.trace_id, caller.span_id)


def test_calls_without_a_caller_span_start_their_own_trace(traced: TracedWorld) -> None:
    with RecommendationClient(traced.target) as client:
        client.get_recommendations(USER, limit=3)
        with grpc.insecure_channel(traced.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    spans = traced.exporter.get_finished_spans()
    server = server_span(spans, GET)  # and nothing for the health check: probes are not traced
    assert server.parent is None
    assert {s.name for s in spans} == {
        GET,
        "recgrpc.user_context",
        "recgrpc.score",
        "recgrpc.rerank",
    }


def test_failed_calls_carry_their_status_code(traced: TracedWorld) -> None:
    with RecommendationClient(traced.target) as client:
        with pytest.raises(InvalidArgumentError):
            client.get_recommendations("", limit=3)
        with pytest.raises(NotFoundError):
            client.log_interaction(USER, "no-such-item", "click")
    spans = traced.exporter.get_finished_spans()
    invalid = server_span(spans, GET)
    assert (invalid.attributes or {})["rpc.grpc.status_code"] == 3
    # A caller's mistake is not the server's error (the semantic conventions' rule for servers).
    assert invalid.status.status_code == trace.StatusCode.UNSET
    assert children_of(spans, invalid) == []  # refused before any work
    missing = server_span(spans, LOG)
    assert (missing.attributes or {})["rpc.grpc.status_code"] == 5
    assert [s.name for s in children_of(spans, missing)] == ["recgrpc.group_commit"]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver on a loopback port: keeps every export request."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = threading.Event()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_otlp_endpoint_exports_the_servers_spans(tmp_path: Path, sqlite_template: Path) -> None:
    collector = Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    path = tmp_path / "otlp.db"
    shutil.copy(sqlite_template, path)
    settings = Settings.from_env(
        {
            "RECGRPC_DATABASE_URL": f"sqlite:///{path}",
            "RECGRPC_HOST": "127.0.0.1",
            "RECGRPC_PORT": "0",
            "RECGRPC_METRICS_PORT": "0",
            "RECGRPC_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "RECGRPC_TRACE_SERVICE_NAME": "recs-eu",
        }
    )
    server = create_server(settings)
    try:
        assert server.wait_ready(30)
        with RecommendationClient(f"127.0.0.1:{server.port}") as client:
            client.get_recommendations("nobody", limit=3)
    finally:
        server.stop(grace=1)  # flushes the batched spans
    receiver.stop(0)
    assert collector.received.is_set()
    resource_spans = [rs for r in collector.requests for rs in r.resource_spans]
    service_names = {
        a.value.string_value
        for rs in resource_spans
        for a in rs.resource.attributes
        if a.key == "service.name"
    }
    assert service_names == {"recs-eu"}
    instances = {
        a.value.string_value
        for rs in resource_spans
        for a in rs.resource.attributes
        if a.key == "service.instance.id"
    }
    assert instances == {f"{socket.gethostname()}-{os.getpid()}"}  # this process served them
    names = {s.name for rs in resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert GET in names
    assert {"recgrpc.user_context", "recgrpc.rerank"} <= names


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECGRPC_OTLP_ENDPOINT", "collector:4317"),
        ("RECGRPC_OTLP_ENDPOINT", "grpc://collector:4317"),
        ("RECGRPC_TRACE_SAMPLE_RATIO", "1.5"),
        ("RECGRPC_TRACE_SAMPLE_RATIO", "nan"),
    ],
)
def test_bad_tracing_settings_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        Settings.from_env({variable: value})
