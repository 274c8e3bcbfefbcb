"""Server reflection on a thread budget of its own, with idle streams cancelled.

A reflection stream is bidirectional: in the synchronous server its handler holds a thread for
as long as the caller keeps the stream open, reading or not. Served from the RPC pool, a few
idle reflection clients (anonymous: tooling needs no token) would leave no thread for real
calls. Here the streams run on their own small pool (gRPC's per-method
``experimental_thread_pool``), so at worst reflection callers wait for each other, and a stream
that sends no request for ``idle_seconds`` is cancelled to free its thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

SERVICE_NAME: str = reflection.SERVICE_NAME


def _cancel_when_idle(
    requests: Iterator[Any], context: grpc.ServicerContext, idle_seconds: float
) -> Iterator[Any]:
    """``requests``, cancelling the call whenever the next one takes over ``idle_seconds``."""
    while True:
        timer = threading.Timer(idle_seconds, context.cancel)
        timer.daemon = True
        timer.start()
        try:
            request = next(requests)
        except StopIteration:
            return
        finally:
            timer.cancel()
        yield request


class ReflectionService:
    """The standard reflection servicer behind the budget and the idle cancel."""

    def __init__(self, service_names: Iterable[str], workers: int, idle_seconds: float) -> None:
        names = (*service_names, SERVICE_NAME)
        self._servicer = reflection.ReflectionServicer(names)
        self._idle_seconds = idle_seconds
        self.pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reflect")

    def info(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        guarded = _cancel_when_idle(requests, context, self._idle_seconds)
        responses: Iterator[Any] = self._servicer.ServerReflectionInfo(guarded, context)  # type: ignore[func-returns-value, assignment]
        return responses

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        behaviour = self.info
        method = grpc.stream_stream_rpc_method_handler(
            _on_pool(behaviour, self.pool),
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"ServerReflectionInfo": method})

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _on_pool(behaviour: Any, pool: futures.ThreadPoolExecutor) -> Any:
    def run(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        return behaviour(requests, context)  # type: ignore[no-any-return]

    setattr(run, "experimental_thread_pool", pool)  # noqa: B010 - gRPC reads it so
    return run


__all__ = ["SERVICE_NAME", "ReflectionService"]
