"""Extra real servers for a test (changed settings, test interceptors in front of the
service), stopped when the test ends; and ``Faults``, an interceptor that fails or delays calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from recgrpc.config import Settings
from recgrpc.server import RunningServer, create_server


class Faults(grpc.ServerInterceptor):
    """Records every attempt at ``method``; fails the first ``failures`` with ``code`` and
    delays the rest by ``delay`` seconds."""

    def __init__(
        self,
        method: str,
        *,
        failures: int = 0,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        delay: float = 0.0,
    ) -> None:
        self.method = method
        self.failures = failures
        self.code = code
        self.delay = delay
        self.attempts = 0
        self.requests: list[bytes] = []
        self.metadata: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or not details.method.endswith("/" + self.method):
            return handler
        headers = {key: value for key, value in details.invocation_metadata}

        def behaviour(request: bytes, context: grpc.ServicerContext) -> Any:
            with self._lock:
                attempt = self.attempts
                self.attempts += 1
                self.requests.append(request)
                self.metadata.append(headers)
            if attempt < self.failures:
                context.abort(self.code, f"injected failure {attempt + 1}")
            time.sleep(self.delay)
            return handler.unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@pytest.fixture
def start_server(settings: Settings) -> Iterator[Callable[..., RunningServer]]:
    """Starts extra servers (with interceptors or other settings); stops them afterwards."""
    started: list[RunningServer] = []

    def start(*interceptors: Faults, **changes: Any) -> RunningServer:
        running = create_server(settings.replace(**changes), interceptors=interceptors)
        started.append(running)
        assert running.wait_ready(30), "server never became ready"
        return running

    yield start
    for running in started:
        running.stop(grace=0)
