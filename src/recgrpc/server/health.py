"""The grpc.health.v1 service: liveness and readiness answered from memory, never blocking.

grpc-health-checking's servicer holds one lock across ``set`` and every ``Check``, and sends
each Watch update under it, synchronously: one Watch stream whose reader stopped reading can
stall every later health check. Here ``Check`` reads a dict without a lock, Watch streams are
non-blocking (they hold no RPC thread between updates: gRPC's ``experimental_non_blocking``
path), and updates reach watchers from one notifier thread of their own, so neither ``set``
nor ``Check`` ever waits for a watcher.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = "grpc.health.v1.Health"
Status = int  # a health_pb2.HealthCheckResponse.ServingStatus value
SendResponse = Callable[[Any], None]


def non_blocking(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a response-streaming behaviour as gRPC's non-blocking kind: it is called with a
    ``send_response_callback`` and returns at once instead of yielding from its thread."""
    setattr(behaviour, "experimental_non_blocking", True)  # noqa: B010 - gRPC reads it so
    return behaviour


class HealthService:
    """Statuses by service name ("" is the whole server), with Check and Watch handlers."""

    def __init__(self) -> None:
        self._statuses: dict[str, Status] = {}
        self._watchers: dict[str, set[SendResponse]] = {}
        self._lock = threading.Lock()  # guards _watchers and ordering of set(); Check skips it
        self._shutting_down = False
        self._updates: queue.SimpleQueue[tuple[SendResponse, Any] | None] = queue.SimpleQueue()
        self._notifier = threading.Thread(
            target=self._notify, name="recgrpc-health-notifier", daemon=True
        )
        self._notifier.start()

    def set(self, service: str, status: Status) -> None:
        """Set ``service``'s status and tell its watchers (ignored after graceful shutdown)."""
        with self._lock:
            if self._shutting_down:
                return
            self._set_locked(service, status)

    def status(self, service: str) -> Status | None:
        return self._statuses.get(service)

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, for good: later ``set`` calls are ignored."""
        with self._lock:
            if self._shutting_down:
                return
            for service in list(self._statuses):
                self._set_locked(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._shutting_down = True

    def close(self) -> None:
        self._updates.put(None)

    def _set_locked(self, service: str, status: Status) -> None:
        self._statuses[service] = status  # a single dict store: Check reads it without the lock
        response = health_pb2.HealthCheckResponse(status=status)
        for send in self._watchers.get(service, ()):
            self._updates.put((send, response))

    def _notify(self) -> None:
        while (update := self._updates.get()) is not None:
            send, response = update
            try:
                send(response)
            except Exception:  # a stream that ended meanwhile; its callback removes it
                log.debug("health update not delivered", exc_info=True)

    # -- RPC behaviours ---------------------------------------------------------------------

    def check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: SendResponse,
    ) -> None:
        service = request.service
        with self._lock:
            status = self._statuses.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            self._watchers.setdefault(service, set()).add(send_response_callback)
            first = health_pb2.HealthCheckResponse(status=status)
            self._updates.put((send_response_callback, first))

        def forget() -> None:
            with self._lock:
                self._watchers.get(service, set()).discard(send_response_callback)

        if not context.add_callback(forget):  # already over
            forget()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The generic handler to add to a server."""
        options: dict[str, Any] = {
            "request_deserializer": health_pb2.HealthCheckRequest.FromString,
            "response_serializer": health_pb2.HealthCheckResponse.SerializeToString,
        }

        def watch(request: Any, context: grpc.ServicerContext, send: SendResponse) -> None:
            self.watch(request, context, send)  # a function: a bound method takes no attributes

        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Check": grpc.unary_unary_rpc_method_handler(self.check, **options),
                "Watch": grpc.unary_stream_rpc_method_handler(non_blocking(watch), **options),
            },
        )


__all__ = ["SERVICE_NAME", "HealthService", "non_blocking"]
