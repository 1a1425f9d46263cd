"""The participant channel: the protocol's exchanges as frames over one WebSocket.

An optimisation of the HTTP protocol, never a second protocol: a frame carries exactly
the body a ``POST {base}/{operation}`` would, and is answered with exactly the status
and body that request would get, so both ends run the same code for either. What a
frame saves is the HTTP around it: on loopback an aiohttp request and response cost
the two sides about six times the CPU of a frame each way.

- The coordinator opens ``GET {base}/channel`` as a WebSocket with the subprotocol
  :data:`SUBPROTOCOL`, signed like a call (operation ``"channel {nonce}"``, empty body)
  and carrying a nonce the participant accepts once (:class:`~twopc_core.signing.ReplayGuard`).
  A participant that refuses the upgrade, or does not choose the subprotocol, is
  spoken to over plain HTTP.
- A request frame is a JSON head, a newline, and the body: the head has the frame's
  ``id`` (increasing on its channel), the ``op``, the signature's ``ts`` and ``sig`` and,
  as the HTTP headers would, ``traceparent`` and ``accept``. The signature covers
  ``"channel {nonce} {id} {op}"`` and the body (:func:`frame_operation`): a frame
  cannot be replayed on another channel, at another position, or as another operation.
- An answer frame is a JSON head (``id``, ``status``, ``type``: the content type, and
  ``end``: the last frame of that answer), a newline, and the answer's body or a part of
  it (an NDJSON batch answer streams as several frames, as its HTTP chunks would).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from twopc_core.signing import NONCE_HEADER, sign, signed_headers

__all__ = [
    "CHANNEL_PATH",
    "SUBPROTOCOL",
    "Answer",
    "FrameError",
    "Request",
    "channel_operation",
    "decode_answer",
    "decode_request",
    "encode_answer",
    "encode_request",
    "frame_operation",
    "handshake_headers",
]

#: Where the channel is opened, under the protocol's base URL.
CHANNEL_PATH = "channel"
#: The WebSocket subprotocol both ends must choose: its version is the frames' format.
SUBPROTOCOL = "twopc-channel.1"


class FrameError(ValueError):
    """A frame that is not the channel's format."""


def channel_operation(nonce: str) -> str:
    """What the handshake's signature covers besides its (empty) body."""
    return f"channel {nonce}"


def frame_operation(nonce: str, frame_id: int, operation: str) -> str:
    """What a request frame's signature covers besides its body."""
    return f"channel {nonce} {frame_id} {operation}"


def handshake_headers(secret: str, now: float | None = None) -> tuple[str, dict[str, str]]:
    """A fresh nonce and the signed headers of the handshake that opens a channel with it."""
    nonce = secrets.token_hex(12)
    headers = signed_headers(secret, channel_operation(nonce), b"", now)
    headers[NONCE_HEADER] = nonce
    return nonce, headers


@dataclass(frozen=True)
class Request:
    """A request frame, decoded: its head's fields and the body they sign."""

    frame_id: int
    operation: str
    timestamp: str | None
    signature: str | None
    traceparent: str | None
    accept: str | None
    body: bytes


@dataclass(frozen=True)
class Answer:
    """An answer frame, decoded."""

    frame_id: int
    status: int
    content_type: str
    end: bool
    body: bytes


def encode_request(
    secret: str,
    nonce: str,
    frame_id: int,
    operation: str,
    body: bytes,
    traceparent: str | None = None,
    accept: str | None = None,
    now: float | None = None,
) -> bytes:
    """A signed request frame."""
    timestamp = f"{time.time() if now is None else now:.3f}"
    signature = sign(secret, timestamp, frame_operation(nonce, frame_id, operation), body)
    head: dict[str, Any] = {"id": frame_id, "op": operation, "ts": timestamp, "sig": signature}
    if traceparent is not None:
        head["traceparent"] = traceparent
    if accept is not None:
        head["accept"] = accept
    return orjson.dumps(head) + b"\n" + body


def decode_request(data: bytes) -> Request:
    head = _head(data)
    frame_id, operation = head.get("id"), head.get("op")
    if not isinstance(frame_id, int) or not isinstance(operation, str):
        raise FrameError("a request frame's head needs an integer id and an op")
    return Request(
        frame_id,
        operation,
        _optional_text(head, "ts"),
        _optional_text(head, "sig"),
        _optional_text(head, "traceparent"),
        _optional_text(head, "accept"),
        data[data.index(b"\n") + 1 :],
    )


def encode_answer(frame_id: int, status: int, content_type: str, body: bytes, *, end: bool) -> bytes:
    head = {"id": frame_id, "status": status, "type": content_type, "end": end}
    return orjson.dumps(head) + b"\n" + body


def decode_answer(data: bytes) -> Answer:
    head = _head(data)
    frame_id, status, content_type, end = head.get("id"), head.get("status"), head.get("type"), head.get("end")
    if not (isinstance(frame_id, int) and isinstance(status, int) and isinstance(content_type, str)):
        raise FrameError("an answer frame's head needs an integer id and status and a type")
    if not isinstance(end, bool):
        raise FrameError("an answer frame's head needs end: true or false")
    return Answer(frame_id, status, content_type, end, data[data.index(b"\n") + 1 :])


def _head(data: bytes) -> dict[str, Any]:
    newline = data.find(b"\n")
    if newline < 0:
        raise FrameError("a frame is a JSON head, a newline and a body")
    try:
        head = orjson.loads(data[:newline])
    except orjson.JSONDecodeError:
        raise FrameError("a frame's head is not JSON") from None
    if not isinstance(head, dict):
        raise FrameError("a frame's head is a JSON object")
    return head


def _optional_text(head: dict[str, Any], key: str) -> str | None:
    value = head.get(key)
    if value is not None and not isinstance(value, str):
        raise FrameError(f"a frame's {key} is a string")
    return value
