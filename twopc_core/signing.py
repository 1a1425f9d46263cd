"""Request signatures between the coordinator and a participant.

The coordinator signs each protocol request with the participant's shared secret:
``HMAC-SHA256(secret, "{timestamp}\\n{operation}\\n" + body)``. The operation is part
of the MAC so that a captured ``abort`` cannot be replayed as a ``commit`` (their
bodies are alike); the timestamp bounds how long a captured request stays valid.

A participant's own calls to the coordinator's REST API (inquiries, early-prepare
enlistments) are signed the same way with the same secret, the operation being
``"{participant} {nonce} {METHOD} {path?query}"``: the coordinator knows who asks, and
remembers the nonces it saw within the timestamp's window, so a captured call cannot
be sent again (:class:`ReplayGuard`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict

__all__ = [
    "MAX_SKEW_SECONDS",
    "NONCE_HEADER",
    "PARTICIPANT_HEADER",
    "SIGNATURE_HEADER",
    "SignatureError",
    "ReplayGuard",
    "TIMESTAMP_HEADER",
    "participant_operation",
    "sign",
    "signed_headers",
    "signed_request_headers",
    "verify",
]

SIGNATURE_HEADER = "X-Twopc-Signature"
TIMESTAMP_HEADER = "X-Twopc-Timestamp"
#: On a participant's call to the coordinator: who signed it, and a value used once.
PARTICIPANT_HEADER = "X-Twopc-Participant"
NONCE_HEADER = "X-Twopc-Nonce"
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


def participant_operation(participant: str, nonce: str, method: str, path_qs: str) -> str:
    """What a participant's call to the coordinator signs besides its body."""
    return f"{participant} {nonce} {method.upper()} {path_qs}"


def signed_request_headers(
    participant: str, secret: str, method: str, path_qs: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The headers that sign a participant's call to the coordinator's REST API."""
    nonce = secrets.token_hex(12)
    headers = signed_headers(secret, participant_operation(participant, nonce, method, path_qs), body, now)
    headers[PARTICIPANT_HEADER] = participant
    headers[NONCE_HEADER] = nonce
    return headers


class ReplayGuard:
    """The nonces seen within the signatures' window: a nonce is accepted once.

    A nonce needs remembering only while its timestamp is fresh (older calls fail
    :func:`verify` anyway); beyond ``capacity`` nonces the oldest are forgotten early,
    which only shortens how long a replay is caught, never refuses a fresh call.
    """

    def __init__(self, window: float = MAX_SKEW_SECONDS, capacity: int = 100_000) -> None:
        self._window = window
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, nonce: str, now: float | None = None) -> None:
        """Raise :class:`SignatureError` for a nonce already seen, else remember it."""
        current = time.time() if now is None else now
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if seen_at > current - 2 * self._window and len(self._seen) < self._capacity:
                break
            del self._seen[oldest]
        if nonce in self._seen:
            raise SignatureError("request was already received (a replay)")
        self._seen[nonce] = current
