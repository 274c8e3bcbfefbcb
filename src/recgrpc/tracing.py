"""Span hooks for the steps inside an RPC (context read, scoring, re-ranking, group commit).

The server's tracing interceptor (``server.tracing``) starts each RPC's span and makes its
tracer current for the call; ``span`` then opens a child of whatever span is current. Outside
a traced call (tracing off, the dashboard, jobs) ``span`` returns one shared do-nothing
context, so a hook costs a context-variable read and a ``with`` statement.

Only the OpenTelemetry API is used here, so every layer may call these hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar, Token

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

_current_tracer: ContextVar[trace.Tracer | None] = ContextVar("recgrpc_tracer", default=None)
_UNTRACED: AbstractContextManager[trace.Span] = nullcontext(trace.INVALID_SPAN)


def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None
) -> AbstractContextManager[trace.Span]:
    """A child span of the current one while a traced RPC runs, else a do-nothing context.

    The span records an exception raised inside it and ends when the block does.
    """
    tracer = _current_tracer.get()
    if tracer is None:
        return _UNTRACED
    return tracer.start_as_current_span(name, attributes=attributes)


def enter_call(tracer: trace.Tracer) -> Token[trace.Tracer | None]:
    """Make ``tracer`` the one ``span`` uses until ``leave_call`` (one RPC, same thread)."""
    return _current_tracer.set(tracer)


def leave_call(token: Token[trace.Tracer | None]) -> None:
    _current_tracer.reset(token)


__all__ = ["enter_call", "leave_call", "span"]
