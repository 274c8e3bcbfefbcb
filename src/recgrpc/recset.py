"""``recset_id``: a signed, self-describing attribution token for a served list.

Like a retail API's attribution token, it carries what feedback on the list is attributed to
(algorithm, model version, serving time), so SubmitFeedback and LogInteraction attribute
without reading the stored impression (which is written behind, and may not be flushed yet or
may have been dropped). Opaque to callers: ``PREFIX`` and the base64url of

    format/algorithm (1 byte) | served at, ms since the epoch (6) | nonce (4) |
    model-version length (1) | model version (its first 24 ASCII bytes) | HMAC-SHA256 (first 8)

at most 62 characters (the column holds 64). The MAC makes a forged or altered token unreadable
(``read`` returns None); it is keyed by ``Settings.recset_secret`` so every server of one
deployment reads the others' tokens. The prefix (a "." never occurs in base64url or a UUID)
tells a token from the plain ids of other lists (discovery shelves, search results), which
are attributed from their stored impressions instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from recgrpc.domain import Algorithm

PREFIX = "r1."
FORMAT = 1
MAX_VERSION_BYTES = 24
MAC_BYTES = 8
HEADER_BYTES = 12
MAX_TOKEN_LENGTH = 64
_CODES = {
    Algorithm.HYBRID: 1,
    Algorithm.COLLABORATIVE: 2,
    Algorithm.CONTENT: 3,
    Algorithm.POPULAR: 4,
}
_ALGORITHMS = {code: algorithm for algorithm, code in _CODES.items()}


def is_token(recset_id: str) -> bool:
    """True when ``recset_id`` claims to be a token (which ``read`` then has to verify)."""
    return recset_id.startswith(PREFIX)


@dataclass(frozen=True, slots=True)
class Attribution:
    """What a served list is attributed to."""

    algorithm: Algorithm
    model_version: str
    served_at: datetime

    @property
    def source(self) -> tuple[str, str]:
        """(algorithm, model_version), as the per-algorithm metrics label feedback."""
        return self.algorithm.value, self.model_version


class RecsetTokens:
    """Issues and reads ``recset_id`` tokens under one secret. Thread-safe (no state)."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the recset_id secret must not be empty")
        self._key = hashlib.sha256(b"recgrpc recset_id\0" + secret).digest()

    def issue(self, algorithm: Algorithm, model_version: str, served_at: datetime) -> str:
        # Trained versions are 24 characters; a longer name is carried cut (never refused).
        version = model_version.encode("ascii", "replace")[:MAX_VERSION_BYTES]
        millis = int(served_at.timestamp() * 1000)
        body = (
            bytes([FORMAT << 4 | _CODES[algorithm]])
            + millis.to_bytes(6, "big")
            + os.urandom(4)
            + bytes([len(version)])
            + version
        )
        token = body + self._mac(body)
        return PREFIX + base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")

    def read(self, recset_id: str) -> Attribution | None:
        """The token's attribution; None for anything this deployment did not issue."""
        if not is_token(recset_id) or len(recset_id) > MAX_TOKEN_LENGTH:
            return None
        encoded = recset_id[len(PREFIX) :]
        if not encoded.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < HEADER_BYTES + MAC_BYTES:
            return None
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        length = body[HEADER_BYTES - 1]
        algorithm = _ALGORITHMS.get(body[0] & 0x0F)
        if body[0] >> 4 != FORMAT or algorithm is None or len(body) != HEADER_BYTES + length:
            return None
        millis = int.from_bytes(body[1:7], "big")
        return Attribution(
            algorithm=algorithm,
            model_version=body[HEADER_BYTES:].decode("ascii", "replace"),
            served_at=datetime.fromtimestamp(millis / 1000, UTC),
        )

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:MAC_BYTES]
