"""Typed errors raised by the client; the tree is documented on :class:`RecGrpcError`.

Each class carries the status code it stands for (as in python-api-core's ``exceptions.py``);
:func:`from_rpc_error` is the one place that maps a ``grpc.RpcError`` to a class, and the clients
raise its result ``from`` the original error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One refused request field, e.g. ``FieldViolation("user_id", "is required")``."""

    field: str
    description: str


_BY_CODE: dict[grpc.StatusCode, type[RecGrpcError]] = {}


class RecGrpcError(Exception):
    """Base of every error a client call raises. The tree, by gRPC status code:

    RecGrpcError                 ``.code`` (grpc.StatusCode), ``.message``, ``.retry_delay``
    ├── InvalidArgumentError     INVALID_ARGUMENT: ``.field_violations`` name each bad field
    │   └── ClientArgumentError  refused by the client itself, before sending (also a ValueError)
    ├── NotFoundError            NOT_FOUND: a named user or item does not exist
    ├── FailedPreconditionError  FAILED_PRECONDITION: valid request, system not ready for it
    ├── UnauthenticatedError     UNAUTHENTICATED: missing or unknown bearer token
    ├── PermissionDeniedError    PERMISSION_DENIED: the token may not call this method
    ├── ResourceExhaustedError   RESOURCE_EXHAUSTED: rate limited, or a message too large
    ├── DeadlineExceededError    DEADLINE_EXCEEDED: no answer within the call's timeout
    ├── CallCancelledError       CANCELLED: the call was cancelled
    ├── UnavailableError         UNAVAILABLE: server or its database unreachable, after retries
    ├── UnimplementedError       UNIMPLEMENTED: the server does not offer this method
    ├── InternalError            INTERNAL, DATA_LOSS: a server bug (logged on the server)
    └── UnknownError             UNKNOWN and any other status

    Only UNAVAILABLE is retried (by the channel, before the error reaches you). Arguments the
    client cannot send at all (an unknown interaction type, a naive datetime, a timeout of 0,
    a value of the wrong type) raise :class:`ClientArgumentError` before anything is sent; the
    server's own refusals (a rating off the scale, an id too long) are
    :class:`InvalidArgumentError`. Both carry ``.field_violations``.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    """The status this class stands for; an instance may carry a related one (DATA_LOSS)."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: tuple[pb_message.Message, ...] = (),
        retry_delay: timedelta | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        """Unpacked ``google.rpc`` detail messages the server attached, if any."""
        self.retry_delay = retry_delay
        """How long the server asked the caller to wait before retrying (``RetryInfo``)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _BY_CODE.setdefault(cls.code, cls)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgumentError(RecGrpcError):
    """The request was refused; ``field_violations`` say which fields and why."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        *,
        field_violations: tuple[FieldViolation, ...] = (),
        details: tuple[pb_message.Message, ...] = (),
        retry_delay: timedelta | None = None,
    ) -> None:
        super().__init__(message, details=details, retry_delay=retry_delay)
        self.field_violations = field_violations

    @property
    def fields(self) -> list[str]:
        """The names of the refused fields, in the server's order."""
        return [v.field for v in self.field_violations]


class ClientArgumentError(InvalidArgumentError, ValueError):
    """An argument the client refused before sending anything; ``field_violations`` names it.

    Also a ``ValueError``, which is what earlier versions of the client raised.
    """

    def __init__(self, field: str, description: str) -> None:
        super().__init__(
            f"{field}: {description}", field_violations=(FieldViolation(field, description),)
        )


class NotFoundError(RecGrpcError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(RecGrpcError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UnauthenticatedError(RecGrpcError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(RecGrpcError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(RecGrpcError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(RecGrpcError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CallCancelledError(RecGrpcError):
    code = grpc.StatusCode.CANCELLED


class UnavailableError(RecGrpcError):
    code = grpc.StatusCode.UNAVAILABLE


class UnimplementedError(RecGrpcError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(RecGrpcError):
    code = grpc.StatusCode.INTERNAL


class UnknownError(RecGrpcError):
    code = grpc.StatusCode.UNKNOWN


# Codes this service does not use on purpose still get a fitting class; the rest are Unknown.
_BY_CODE[grpc.StatusCode.DATA_LOSS] = InternalError


def _status_details(trailing: Iterable[Any] | None) -> status_pb2.Status | None:
    # Sync calls give (key, value) named tuples, grpc.aio a Metadata that iterates as pairs.
    for key, value in trailing or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except pb_message.DecodeError:
                return None
    return None


def _unpack(status: status_pb2.Status) -> list[pb_message.Message]:
    known: tuple[type[pb_message.Message], ...] = (
        error_details_pb2.BadRequest,
        error_details_pb2.RetryInfo,
        error_details_pb2.ErrorInfo,
        error_details_pb2.QuotaFailure,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.ResourceInfo,
        error_details_pb2.DebugInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
        error_details_pb2.RequestInfo,
    )
    unpacked: list[pb_message.Message] = []
    for packed in status.details:
        for cls in known:
            if packed.Is(cls.DESCRIPTOR):
                detail = cls()
                packed.Unpack(detail)
                unpacked.append(detail)
                break
    return unpacked


def from_rpc_error(exc: grpc.RpcError) -> RecGrpcError:
    """The typed error for a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    message = (exc.details() if callable(getattr(exc, "details", None)) else None) or ""
    trailing = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else ()
    status = _status_details(trailing)
    details = tuple(_unpack(status)) if status is not None else ()
    violations = tuple(
        FieldViolation(v.field, v.description)
        for detail in details
        if isinstance(detail, error_details_pb2.BadRequest)
        for v in detail.field_violations
    )
    retry_delay = next(
        (
            d.retry_delay.ToTimedelta()
            for d in details
            if isinstance(d, error_details_pb2.RetryInfo) and d.HasField("retry_delay")
        ),
        None,
    )
    cls = _BY_CODE.get(code, UnknownError)
    if cls is InvalidArgumentError:
        return InvalidArgumentError(
            message, field_violations=violations, details=details, retry_delay=retry_delay
        )
    return cls(message, code=code, details=details, retry_delay=retry_delay)


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise any ``grpc.RpcError`` inside the block as its typed error, chained ``from``."""
    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc


__all__ = [
    "CallCancelledError",
    "ClientArgumentError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "RecGrpcError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "from_rpc_error",
    "translated_errors",
]
