"""Request signatures between the coordinator and a participant.

The coordinator signs each protocol request with the participant's shared secret:
``HMAC-SHA256(secret, "{timestamp}\\n{operation}\\n" + body)``. The operation is part
of the MAC so that a captured ``abort`` cannot be replayed as a ``commit`` (their
bodies are alike); the timestamp bounds how long a captured request stays valid.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time

__all__ = [
    "MAX_SKEW_SECONDS",
    "SIGNATURE_HEADER",
    "SignatureError",
    "TIMESTAMP_HEADER",
    "sign",
    "signed_headers",
    "verify",
]

SIGNATURE_HEADER = "X-Twopc-Signature"
TIMESTAMP_HEADER = "X-Twopc-Timestamp"
MAX_SKEW_SECONDS = 300.0


class SignatureError(Exception):
    """The request is unsigned, wrongly signed or stale."""


def sign(secret: str, timestamp: str, operation: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    mac.update(f"{timestamp}\n{operation}\n".encode())
    mac.update(body)
    return mac.hexdigest()


def signed_headers(secret: str, operation: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = f"{time.time() if now is None else now:.3f}"
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, operation, body),
    }


def verify(
    secret: str,
    operation: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: float | None = None,
) -> None:
    """Raise :class:`SignatureError` unless the signature is valid and fresh."""
    if not timestamp or not signature:
        raise SignatureError("request is not signed")
    try:
        sent_at = float(timestamp)
    except ValueError:
        raise SignatureError("malformed signature timestamp") from None
    if not math.isfinite(sent_at):  # "nan" would pass any staleness check
        raise SignatureError("malformed signature timestamp")
    current = time.time() if now is None else now
    if abs(current - sent_at) > MAX_SKEW_SECONDS:
        raise SignatureError("signature timestamp is stale")
    expected = sign(secret, timestamp, operation, body)
    # compare_digest raises TypeError for non-ASCII str; such a signature never matches.
    if not signature.isascii() or not hmac.compare_digest(expected, signature):
        raise SignatureError("signature does not match")
