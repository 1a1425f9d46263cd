"""The payload's shape: what parses, what is refused and why, and the staged form."""

from __future__ import annotations

import base64

import pytest

from adapters.kafka.limits import TopicInfo, check_messages, record_size
from adapters.kafka.messages import (
    MAX_MESSAGES,
    OutgoingMessage,
    PayloadError,
    decode_messages,
    encode_messages,
    parse_payload,
)


def test_values_keys_and_headers_in_each_form() -> None:
    parsed = parse_payload(
        {
            "messages": [
                {"topic": "t", "value": {"a": [1, 2]}, "key": "k", "headers": {"x": "1", "y": None}},
                {"topic": "t", "value_text": "héllo", "key_b64": base64.b64encode(b"\x00").decode(), "partition": 2},
                {
                    "topic": "t",
                    "value_b64": base64.b64encode(b"\xff\xfe").decode(),
                    "headers": [["h", "a"], ["h", "b"]],
                },
                {"topic": "t.x_y-z", "key": "tombstone"},
            ]
        }
    )
    assert parsed == [
        OutgoingMessage("t", b'{"a":[1,2]}', b"k", (("x", b"1"), ("y", None))),
        OutgoingMessage("t", "héllo".encode(), b"\x00", (), 2),
        OutgoingMessage("t", b"\xff\xfe", None, (("h", b"a"), ("h", b"b"))),
        OutgoingMessage("t.x_y-z", None, b"tombstone"),
    ]


def test_a_json_null_value_is_the_text_null_not_a_tombstone() -> None:
    [message] = parse_payload({"messages": [{"topic": "t", "value": None}]})
    assert message.value == b"null"


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ([], "must be an object"),
        ({}, 'no "messages"'),
        ({"messages": [], "extra": 1}, "unexpected fields ['extra']"),
        ({"messages": {}}, "must be a list"),
        ({"messages": [1]}, "messages[0] must be an object"),
        ({"messages": [{"value": 1}]}, "messages[0].topic"),
        ({"messages": [{"topic": "bad topic", "value": 1}]}, "Kafka topic name"),
        ({"messages": [{"topic": "..", "value": 1}]}, "Kafka topic name"),
        ({"messages": [{"topic": "t" * 250, "value": 1}]}, "Kafka topic name"),
        ({"messages": [{"topic": "t", "value": 1, "partition": -1}]}, "non-negative integer"),
        ({"messages": [{"topic": "t", "value": 1, "partition": True}]}, "non-negative integer"),
        ({"messages": [{"topic": "t", "value": 1, "value_text": "x"}]}, "gives its value twice"),
        ({"messages": [{"topic": "t", "value": 1, "key": "a", "key_b64": "YQ=="}]}, "gives its key twice"),
        ({"messages": [{"topic": "t", "value_b64": "not base64!"}]}, "not valid base64"),
        ({"messages": [{"topic": "t", "value_text": 5}]}, "value_text must be a string"),
        ({"messages": [{"topic": "t", "key": 5, "value": 1}]}, "key must be a string"),
        ({"messages": [{"topic": "t"}]}, "neither a value nor a key"),
        ({"messages": [{"topic": "t", "value": 1, "headers": "x"}]}, "headers must be an object or a list"),
        ({"messages": [{"topic": "t", "value": 1, "headers": [["a"]]}]}, "headers[0] must be a"),
        ({"messages": [{"topic": "t", "value": 1, "headers": {"": "x"}}]}, "non-empty string"),
        ({"messages": [{"topic": "t", "value": 1, "headers": {"a": 1}}]}, "string or null"),
        ({"messages": [{"topic": "t", "value": 1, "colour": "red"}]}, "unexpected fields ['colour']"),
    ],
)
def test_a_malformed_payload_is_refused_saying_where(payload: object, says: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_payload(payload)
    assert says in str(caught.value)


def test_too_many_messages_are_refused() -> None:
    with pytest.raises(PayloadError, match=f"at most {MAX_MESSAGES}"):
        parse_payload({"messages": [{"topic": "t", "value": 1}] * (MAX_MESSAGES + 1)})


def test_the_staged_form_round_trips_and_is_stable() -> None:
    messages = parse_payload(
        {
            "messages": [
                {"topic": "a", "value_b64": base64.b64encode(bytes(range(256))).decode(), "partition": 0},
                {"topic": "b", "key": "k", "headers": [["h", None], ["h", "v"]]},
            ]
        }
    )
    blob = encode_messages(messages)
    assert decode_messages(blob) == messages
    assert encode_messages(decode_messages(blob)) == blob  # equal messages, equal bytes (and digest)
    with pytest.raises(ValueError, match="not readable"):
        decode_messages(b'[{"t": "a"}]')


TOPICS = {
    "plain": TopicInfo("plain", partitions=3, max_message_bytes=1_048_588, compacted=False),
    "compacted": TopicInfo("compacted", partitions=1, max_message_bytes=1_048_588, compacted=True),
    "small": TopicInfo("small", partitions=1, max_message_bytes=500, compacted=False),
    "missing": None,
}


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (OutgoingMessage("missing", b"v"), "does not exist"),
        (OutgoingMessage("plain", b"v", partition=3), "partitions 0..2, not 3"),
        (OutgoingMessage("compacted", b"v"), "needs a key"),
        (OutgoingMessage("small", b"v" * 500), "max.message.bytes of 'small'"),
        (OutgoingMessage("plain", b"v" * 2_000_000), "max_request_size"),
        (OutgoingMessage("__consumer_offsets", b"v"), "internal"),
        (OutgoingMessage("_twopc_stage.me", b"v"), "internal"),
    ],
)
def test_what_the_broker_would_refuse_is_named(message: OutgoingMessage, says: str) -> None:
    reason = check_messages([OutgoingMessage("plain", b"ok"), message], TOPICS, 1_048_576, "_twopc_stage.me")
    assert reason is not None and reason.startswith("messages[1]") and says in reason


def test_what_the_broker_takes_passes() -> None:
    size = max(n for n in range(500) if record_size(OutgoingMessage("small", b"v" * n)) <= 500)
    fits = OutgoingMessage("small", b"v" * size)
    assert check_messages([OutgoingMessage("small", b"v" * (size + 1))], TOPICS, 1_048_576, "s") is not None
    messages = [fits, OutgoingMessage("compacted", None, b"k"), OutgoingMessage("plain", b"v", partition=2)]
    assert check_messages(messages, TOPICS, 1_048_576, "_twopc_stage.me") is None
