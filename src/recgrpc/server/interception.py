"""Base classes for the server's interceptors: wrap each method's behaviour once, then either
admit/refuse calls (``GateInterceptor``) or see them begin and end (``ObservingInterceptor``).

A new interceptor (tracing, say) subclasses one of the two and joins the chain in
``interceptors.standard_interceptors``. Wrappers keep gRPC's per-behaviour options
(``experimental_non_blocking``, ``experimental_thread_pool``): losing them would put the
health Watch and reflection streams back on the RPC thread pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from recgrpc.server.metrics import split_method

if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler

Behaviour = Callable[..., Any]
S = TypeVar("S")
# Options gRPC reads off a behaviour; wrappers must carry them.
_BEHAVIOUR_OPTIONS = ("experimental_non_blocking", "experimental_thread_pool")


@dataclass(frozen=True, slots=True)
class RpcInfo:
    """What the interceptors know about a method: names and gRPC type."""

    full_method: str
    service: str
    method: str
    grpc_type: str  # unary, server_stream, client_stream, bidi_stream

    @classmethod
    def of(cls, full_method: str, handler: _Handler) -> RpcInfo:
        service, method = split_method(full_method)
        kind = {
            (False, False): "unary",
            (False, True): "server_stream",
            (True, False): "client_stream",
            (True, True): "bidi_stream",
        }[(bool(handler.request_streaming), bool(handler.response_streaming))]
        return cls(full_method, service, method, kind)


def metadata_value(context: grpc.ServicerContext, key: str) -> str | None:
    """The first value of invocation metadata ``key`` (keys arrive lower-case)."""
    for item in context.invocation_metadata() or ():
        if item[0] == key:
            value = item[1]
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def final_code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    """The status the caller will see: the code set by abort/set_code, else OK or UNKNOWN."""
    # ServicerContext.code() exists at run time (grpc >= 1.38) but not in the type stubs.
    code: grpc.StatusCode | None = getattr(context, "code")()  # noqa: B009
    if code is None or (failed and code == grpc.StatusCode.OK):
        return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
    return code


def on_end(context: grpc.ServicerContext, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the call is over (at once if it already is)."""
    if not context.add_callback(callback):
        callback()


def _carry_options(wrapper: Behaviour, behaviour: Behaviour) -> Behaviour:
    for option in _BEHAVIOUR_OPTIONS:
        if hasattr(behaviour, option):
            setattr(wrapper, option, getattr(behaviour, option))
    return wrapper


def is_non_blocking(behaviour: Behaviour) -> bool:
    return bool(getattr(behaviour, "experimental_non_blocking", False))


class WrappingInterceptor(_Interceptor):
    """Wraps each method's behaviour once; the wrapper is cached by method name."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._rebuild(handler, RpcInfo.of(method, handler))
        self._wrapped[method] = (handler, wrapped)  # a dict store is atomic; races only rewrap
        return wrapped

    def _rebuild(self, handler: _Handler, rpc: RpcInfo) -> _Handler:
        options: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        kinds = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler, False),
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler, True),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler, False),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler, True),
        )
        for behaviour, make, streaming in kinds:
            if behaviour is not None:
                wrapped = self.wrap(behaviour, rpc, streaming=streaming)
                if wrapped is not behaviour:
                    wrapped = _carry_options(wrapped, behaviour)
                rebuilt: _Handler = make(wrapped, **options)
                return rebuilt
        return handler  # pragma: no cover - grpc always sets one of the four

    def wrap(self, behaviour: Behaviour, rpc: RpcInfo, *, streaming: bool) -> Behaviour:
        raise NotImplementedError


class GateInterceptor(WrappingInterceptor):
    """Admits or refuses a call before it runs (``admit`` aborts to refuse)."""

    def __init__(self, exempt_services: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.exempt_services = exempt_services

    def admit(self, rpc: RpcInfo, context: grpc.ServicerContext) -> None:
        raise NotImplementedError

    def wrap(self, behaviour: Behaviour, rpc: RpcInfo, *, streaming: bool) -> Behaviour:
        if rpc.service in self.exempt_services:
            return behaviour
        admit = self.admit

        def gated(request: Any, context: grpc.ServicerContext, *send: Any) -> Any:
            admit(rpc, context)
            return behaviour(request, context, *send)

        return gated


class ObservingInterceptor(WrappingInterceptor, Generic[S]):
    """Sees every call begin and end with its final status code (streams: when they finish)."""

    def begin(self, rpc: RpcInfo, context: grpc.ServicerContext) -> S:
        raise NotImplementedError

    def end(
        self, rpc: RpcInfo, context: grpc.ServicerContext, state: S, code: grpc.StatusCode
    ) -> None:
        raise NotImplementedError

    def wrap(self, behaviour: Behaviour, rpc: RpcInfo, *, streaming: bool) -> Behaviour:
        if is_non_blocking(behaviour):
            return self._wrap_non_blocking(behaviour, rpc)
        begin, end = self.begin, self.end

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            state = begin(rpc, context)
            try:
                response = behaviour(request, context)
            except BaseException:
                end(rpc, context, state, final_code(context, failed=True))
                raise
            if streaming:
                return self._observe_stream(response, rpc, context, state)
            end(rpc, context, state, final_code(context, failed=False))
            return response

        return observed

    def _wrap_non_blocking(self, behaviour: Behaviour, rpc: RpcInfo) -> Behaviour:
        """A stream that answers through ``send`` from other threads: it ends when ``send(None)``
        closes it or, failing that, when the call is over (the caller went away: CANCELLED)."""
        begin, end = self.begin, self.end

        def observed(request: Any, context: grpc.ServicerContext, send: Any) -> Any:
            state = begin(rpc, context)
            once = threading.Lock()

            def finish(code: grpc.StatusCode) -> None:
                if once.acquire(blocking=False):
                    end(rpc, context, state, code)

            def send_observed(response: Any) -> None:
                if response is None:
                    finish(final_code(context, failed=False))
                send(response)

            try:
                behaviour(request, context, send_observed)
            except BaseException:
                finish(final_code(context, failed=True))
                raise
            on_end(context, lambda: finish(grpc.StatusCode.CANCELLED))

        return observed

    def _observe_stream(
        self, responses: Iterator[Any], rpc: RpcInfo, context: grpc.ServicerContext, state: S
    ) -> Iterator[Any]:
        code = grpc.StatusCode.CANCELLED  # if the stream is closed before it ends
        try:
            yield from responses
            code = final_code(context, failed=False)
        except GeneratorExit:  # closed early (the caller went away): stays CANCELLED
            raise
        except BaseException:
            code = final_code(context, failed=True)
            raise
        finally:
            self.end(rpc, context, state, code)


__all__ = [
    "Behaviour",
    "GateInterceptor",
    "ObservingInterceptor",
    "RpcInfo",
    "WrappingInterceptor",
    "final_code",
    "is_non_blocking",
    "metadata_value",
    "on_end",
]
