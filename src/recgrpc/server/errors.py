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

# Why a read was served from memory without the user's history (the database is unreachable).
DATABASE_DOWN = "database unavailable: served without the user's history"

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


# A status travels in trailing metadata (details base64-encoded, the message percent-encoded),
# and gRPC clients refuse trailers past their metadata limit (8 KiB by default) with
# RESOURCE_EXHAUSTED, losing the code and the details. These budgets keep a refusal with any
# number of violations well inside it.
DETAILS_BUDGET = 4096
"""Bytes of serialized ``BadRequest`` field violations (about 5.5 KiB once base64-encoded)."""
MESSAGE_BUDGET = 1024
"""Bytes of the status message once percent-encoded."""
_FIELD_CHARS = 200
_DESCRIPTION_CHARS = 400


def _wire_length(text: str) -> int:
    """Length of ``text`` as a grpc-message: bytes outside printable ASCII (and ``%``) take 3."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in text.encode("utf-8"))


def _listed_violations(
    error: InvalidArgument,
) -> tuple[list[error_details_pb2.BadRequest.FieldViolation], int]:
    """The first violations that fit ``DETAILS_BUDGET``, and how many were left out."""
    listed: list[error_details_pb2.BadRequest.FieldViolation] = []
    size = 0
    reserve = 64  # for the closing "and N more" entry
    for violation in error.violations:
        entry = error_details_pb2.BadRequest.FieldViolation(
            field=violation.field[:_FIELD_CHARS],
            description=violation.description[:_DESCRIPTION_CHARS],
        )
        cost = entry.ByteSize() + 3  # its tag and length in the repeated field
        if size + cost > DETAILS_BUDGET - reserve:
            break
        listed.append(entry)
        size += cost
    return listed, len(error.violations) - len(listed)


def _capped_message(error: InvalidArgument) -> str:
    if _wire_length(error.message) <= MESSAGE_BUDGET:
        return error.message
    parts: list[str] = []
    used = 0
    for violation in error.violations:
        part = f"{violation.field[:_FIELD_CHARS]}: {violation.description[:_DESCRIPTION_CHARS]}"
        cost = _wire_length(part) + 2
        if used + cost > MESSAGE_BUDGET - 48:
            break
        parts.append(part)
        used += cost
    rest = len(error.violations) - len(parts)
    if not parts:
        return f"{rest} invalid fields (see the BadRequest details)"
    return "; ".join(parts) + (f"; and {rest} more" if rest else "")


def bad_request(error: InvalidArgument) -> grpc.Status:
    """INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming each bad field; past the
    metadata budgets, the first violations and a last one saying how many more there were."""
    listed, omitted = _listed_violations(error)
    if omitted:
        listed.append(
            error_details_pb2.BadRequest.FieldViolation(
                field="request", description=f"and {omitted} more violations not listed"
            )
        )
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.BadRequest(field_violations=listed))
    return _status(grpc.StatusCode.INVALID_ARGUMENT, _capped_message(error), [packed])


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
