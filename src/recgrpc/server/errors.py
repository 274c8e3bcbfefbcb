"""The one place where exceptions become gRPC statuses.

Domain errors carry their code; database connectivity problems become UNAVAILABLE; anything else
is our bug: INTERNAL with a generic message, the traceback logged, nothing leaked to the caller.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import exc as sa_exc

from recgrpc.errors import InvalidArgument, ServiceError, Unavailable

log = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = "the database is unavailable; retry later"


class DatabaseStalled(Unavailable):
    """The database did not answer within the request's budget (or is known not to)."""

    def __init__(self, message: str = DATABASE_UNAVAILABLE) -> None:
        super().__init__(message)


def _status(
    code: grpc.StatusCode, message: str, details: list[any_pb2.Any] | None = None
) -> grpc.Status:
    proto = status_pb2.Status(code=code.value[0], message=message)
    if details:
        proto.details.extend(details)
    status: grpc.Status = rpc_status.to_status(proto)
    return status


def bad_request(error: InvalidArgument) -> grpc.Status:
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(detail)
    return _status(grpc.StatusCode.INVALID_ARGUMENT, error.message, [packed])


def is_database_outage(exc: BaseException) -> bool:
    """Connection-level failures (refused, dropped, timed out, stalled past the request's
    budget), not constraint violations."""
    if isinstance(exc, DatabaseStalled):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)


def status_for(exc: BaseException, method: str) -> grpc.Status:
    """Map any exception raised while handling ``method`` to the status the caller sees."""
    if isinstance(exc, InvalidArgument):
        return bad_request(exc)
    if isinstance(exc, ServiceError):
        return _status(getattr(grpc.StatusCode, exc.code_name), exc.message)
    if is_database_outage(exc):
        log.warning("database unavailable during %s: %s", method, exc.__class__.__name__)
        return _status(grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE)
    log.exception("unexpected error in %s", method, exc_info=exc)
    return _status(grpc.StatusCode.INTERNAL, "internal error")


__all__ = [
    "DATABASE_UNAVAILABLE",
    "DatabaseStalled",
    "bad_request",
    "is_database_outage",
    "status_for",
]
