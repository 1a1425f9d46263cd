"""A branch's payload: the Kafka messages it publishes on COMMIT, and the consumer
offsets it commits with them.

The payload is ``{"messages": [message, ...], "offsets": {...}}`` (``offsets`` optional,
see :mod:`adapters.kafka.offsets`); each message is an object with

- ``topic`` (required): an existing topic;
- the value, at most one of: ``value`` (any JSON, sent as its UTF-8 JSON text),
  ``value_text`` (a string, sent as UTF-8) or ``value_b64`` (bytes, base64); none of
  them sends a null value (a tombstone, which needs a key);
- the key, optional, one of: ``key`` (a string, sent as UTF-8) or ``key_b64``;
- ``headers``, optional: an object ``{"name": "value", ...}`` or a list of
  ``["name", "value"]`` pairs (names may repeat, order is kept); values are strings
  (sent as UTF-8) or null;
- ``partition``, optional: an explicit partition (else Kafka's default partitioner
  picks one from the key).

:func:`parse_branch` checks the shape only; what the broker would refuse (unknown
topic, partition out of range, too large) is checked by :mod:`adapters.kafka.limits`.
The staged form (:func:`encode_branch`) is compact JSON with bytes in base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.kafka.offsets import GroupOffsets, decode_offsets, encode_offsets, parse_offsets

__all__ = [
    "MAX_MESSAGES",
    "BranchPayload",
    "OutgoingMessage",
    "PayloadError",
    "decode_branch",
    "decode_messages",
    "encode_branch",
    "encode_messages",
    "parse_branch",
    "parse_payload",
]

#: Messages one branch may carry; a bound on memory, far above any sane transaction.
MAX_MESSAGES = 100_000
#: Kafka's own rule for topic names.
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_FIELDS = frozenset({"topic", "partition", "key", "key_b64", "value", "value_text", "value_b64", "headers"})

Header = tuple[str, bytes | None]


class PayloadError(ValueError):
    """The payload does not have the shape described in this module."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: tuple[Header, ...] = ()
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class BranchPayload:
    """What one Kafka branch does at commit: publish ``messages``, commit ``offsets``."""

    messages: list[OutgoingMessage]
    offsets: GroupOffsets | None = None

    @property
    def empty(self) -> bool:
        return not self.messages and self.offsets is None


def parse_branch(payload: Any) -> BranchPayload:
    """The messages and offsets of ``{"messages": [...], "offsets": {...}}``;
    :class:`PayloadError` saying what is wrong."""
    if not isinstance(payload, dict):
        raise PayloadError(f'payload must be an object {{"messages": [...]}}, not {_kind(payload)}')
    unexpected = sorted(set(payload) - {"messages", "offsets"})
    if unexpected:
        raise PayloadError(f'payload has unexpected fields {unexpected}; expected "messages" and "offsets"')
    if "messages" not in payload:
        raise PayloadError('payload has no "messages"')
    raw = payload["messages"]
    if not isinstance(raw, list):
        raise PayloadError(f'payload "messages" must be a list, not {_kind(raw)}')
    if len(raw) > MAX_MESSAGES:
        raise PayloadError(f"a branch may carry at most {MAX_MESSAGES} messages, not {len(raw)}")
    messages = [_parse_message(item, f"messages[{index}]") for index, item in enumerate(raw)]
    offsets = None
    if payload.get("offsets") is not None:
        try:
            offsets = parse_offsets(payload["offsets"])
        except ValueError as exc:
            raise PayloadError(str(exc)) from None
    return BranchPayload(messages, offsets)


def parse_payload(payload: Any) -> list[OutgoingMessage]:
    """The messages of a payload (see :func:`parse_branch`, which gives its offsets too)."""
    return parse_branch(payload).messages


def _parse_message(item: Any, where: str) -> OutgoingMessage:
    if not isinstance(item, dict):
        raise PayloadError(f"{where} must be an object, not {_kind(item)}")
    unexpected = sorted(set(item) - _FIELDS)
    if unexpected:
        raise PayloadError(f"{where} has unexpected fields {unexpected}; allowed: {sorted(_FIELDS)}")
    topic = item.get("topic")
    if not isinstance(topic, str) or not _TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise PayloadError(f"{where}.topic must be a Kafka topic name (letters, digits, '.', '_', '-'), not {topic!r}")
    partition = item.get("partition")
    if partition is not None and (not isinstance(partition, int) or isinstance(partition, bool) or partition < 0):
        raise PayloadError(f"{where}.partition must be a non-negative integer, not {partition!r}")
    key = _bytes_field(item, where, "key", text="key", b64="key_b64")
    value = _bytes_field(item, where, "value", text="value_text", b64="value_b64", json="value")
    if value is None and key is None:
        raise PayloadError(f"{where} has neither a value nor a key: a null value (a tombstone) needs a key")
    headers = _parse_headers(item.get("headers"), f"{where}.headers")
    return OutgoingMessage(topic=topic, value=value, key=key, headers=headers, partition=partition)


def _bytes_field(
    item: dict[str, Any], where: str, what: str, *, text: str, b64: str, json: str | None = None
) -> bytes | None:
    given = [name for name in (json, text, b64) if name is not None and name in item]
    if len(given) > 1:
        raise PayloadError(f"{where} gives its {what} twice ({', '.join(given)}): give one")
    if not given:
        return None
    name = given[0]
    raw = item[name]
    if name == json:
        return orjson.dumps(raw)
    if not isinstance(raw, str):
        raise PayloadError(f"{where}.{name} must be a string, not {_kind(raw)}")
    if name == text:
        return raw.encode("utf-8", errors="surrogatepass")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"{where}.{name} is not valid base64") from None


def _parse_headers(raw: Any, where: str) -> tuple[Header, ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):
        pairs: list[Any] = [[name, value] for name, value in raw.items()]
    elif isinstance(raw, list):
        pairs = raw
    else:
        raise PayloadError(f'{where} must be an object or a list of ["name", "value"] pairs, not {_kind(raw)}')
    headers: list[Header] = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise PayloadError(f'{where}[{index}] must be a ["name", "value"] pair')
        name, value = pair
        if not isinstance(name, str) or not name:
            raise PayloadError(f"{where}[{index}]: a header name must be a non-empty string, not {name!r}")
        if value is not None and not isinstance(value, str):
            raise PayloadError(
                f"{where}[{index}] ({name}): a header value must be a string or null, not {_kind(value)}"
            )
        headers.append((name, None if value is None else value.encode("utf-8", errors="surrogatepass")))
    return tuple(headers)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# -- the staged form ---------------------------------------------------------------------


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def encode_messages(messages: Sequence[OutgoingMessage]) -> bytes:
    """The messages as bytes to stage (and to hash: equal messages give equal bytes)."""
    return orjson.dumps(_message_rows(messages))


def _message_rows(messages: Sequence[OutgoingMessage]) -> list[dict[str, Any]]:
    return [
        {
            "t": m.topic,
            "p": m.partition,
            "k": _b64(m.key),
            "v": _b64(m.value),
            "h": [[name, _b64(value)] for name, value in m.headers],
        }
        for m in messages
    ]


def _messages_of(rows: Any) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            topic=m["t"],
            partition=m["p"],
            key=_unb64(m["k"]),
            value=_unb64(m["v"]),
            headers=tuple((name, _unb64(value)) for name, value in m["h"]),
        )
        for m in rows
    ]


def decode_messages(blob: bytes) -> list[OutgoingMessage]:
    """The messages :func:`encode_messages` encoded; ValueError if ``blob`` is not that."""
    try:
        return _messages_of(orjson.loads(blob))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"staged messages are not readable: {exc}") from None


def encode_branch(branch: BranchPayload) -> bytes:
    """The branch as bytes to stage. A branch without offsets is staged as its messages
    alone (:func:`encode_messages`), as before offsets could be staged."""
    if branch.offsets is None:
        return encode_messages(branch.messages)
    return orjson.dumps({"m": _message_rows(branch.messages), "o": encode_offsets(branch.offsets)})


def decode_branch(blob: bytes) -> BranchPayload:
    """The branch :func:`encode_branch` encoded; ValueError if ``blob`` is not that."""
    try:
        raw = orjson.loads(blob)
        if isinstance(raw, list):
            return BranchPayload(_messages_of(raw))
        return BranchPayload(_messages_of(raw["m"]), decode_offsets(raw["o"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"staged messages are not readable: {exc}") from None
