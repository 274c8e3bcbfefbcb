"""Opaque, tamper-evident page tokens (Google AIP-158) for the List* RPCs.

A token carries where the previous page ended (a keyset cursor) and a digest of the request
it belongs to, signed with HMAC-SHA256: an edited, truncated or foreign token, or one reused
with different filters, is refused with INVALID_ARGUMENT naming ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import UTC, datetime

from recgrpc.errors import InvalidArgument

MAX_TOKEN_LENGTH = 512
_SIGNATURE_BYTES = 16
_INVALID = "is not a page token this server issued for this request (edited, or other filters)"


def signing_key(secret: str, database_url: str) -> bytes:
    """The configured secret, or one derived from the database (shared by its replicas)."""
    material = secret or f"recgrpc page tokens for {database_url}"
    return hashlib.sha256(material.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def request_scope(*parts: object) -> str:
    """A digest of what a token is bound to (method, user, filters)."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def encode(key: bytes, scope: str, at: datetime, row_id: int) -> str:
    payload = json.dumps([scope, at.astimezone(UTC).isoformat(), row_id]).encode()
    signature = hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    return f"{_b64(payload)}.{_b64(signature)}"


def decode(key: bytes, scope: str, token: str) -> tuple[datetime, int]:
    """The cursor in ``token``; raises InvalidArgument unless it is genuine and for ``scope``."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidArgument.single("page_token", _INVALID)
    body, _, sig = token.partition(".")
    try:
        payload, signature = _unb64(body), _unb64(sig)
    except (binascii.Error, ValueError):
        raise InvalidArgument.single("page_token", _INVALID) from None
    if _b64(payload) != body or _b64(signature) != sig:  # base64 has spare bits: be canonical
        raise InvalidArgument.single("page_token", _INVALID)
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    if not hmac.compare_digest(signature, expected):
        raise InvalidArgument.single("page_token", _INVALID)
    try:
        token_scope, at, row_id = json.loads(payload)
        when = datetime.fromisoformat(at)
    except (ValueError, TypeError):  # signed by us, so only a format change can land here
        raise InvalidArgument.single("page_token", _INVALID) from None
    if token_scope != scope or not isinstance(row_id, int) or when.tzinfo is None:
        raise InvalidArgument.single("page_token", _INVALID)
    return when, row_id
