"""One unary call as data (the stub method's name, the request, the reply's conversion), built
once for both clients and sent by the blocking or the asyncio one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from google.protobuf.message import Message

from recgrpc.client._channel import Metadata

if TYPE_CHECKING:
    from recgrpc.v1.recommendation_pb2_grpc import (
        RecommendationServiceAsyncStub,
        RecommendationServiceStub,
    )

Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class Call(Generic[Result]):
    """A RecommendationService call ready to send: ``method`` names the stub's method."""

    method: str
    request: Message
    convert: Callable[[Any], Result]


class SyncSender:
    """Sends a :class:`Call` through the blocking client's stub and ``_call``."""

    if TYPE_CHECKING:
        _recommendations: RecommendationServiceStub
        _call: Callable[[Any, Any, float | None, Metadata | None], Any]

    def _send(
        self, call: Call[Result], timeout: float | None, call_metadata: Metadata | None
    ) -> Result:
        method = getattr(self._recommendations, call.method)
        return call.convert(self._call(method, call.request, timeout, call_metadata))


class AsyncSender:
    """Sends a :class:`Call` through the asyncio client's stub and ``_call``."""

    if TYPE_CHECKING:
        _recommendations: RecommendationServiceAsyncStub
        _call: Callable[[Any, Any, float | None, Metadata | None], Awaitable[Any]]

    async def _send(
        self, call: Call[Result], timeout: float | None, call_metadata: Metadata | None
    ) -> Result:
        method = getattr(self._recommendations, call.method)
        return call.convert(await self._call(method, call.request, timeout, call_metadata))
