"""Domain errors. Each carries the gRPC status it maps to; the server maps them in one place.

ServiceError
├── InvalidArgument   caller sent something unusable (field violations attached)
├── NotFound          a named thing must exist and does not
├── Unavailable       a dependency (the database, a model) is not there right now
└── FailedPrecondition  the request is valid but the system is not in a state to serve it
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """Base for errors that are meant to reach a caller with a specific status."""

    code_name = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    code_name = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        text = message or "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(text)
        self.violations = tuple(violations)

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(ServiceError):
    code_name = "NOT_FOUND"


class Unavailable(ServiceError):
    code_name = "UNAVAILABLE"


class FailedPrecondition(ServiceError):
    code_name = "FAILED_PRECONDITION"
