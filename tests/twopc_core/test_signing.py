"""Request signatures between the coordinator and a participant."""

from __future__ import annotations

import pytest

from twopc_core.signing import (
    MAX_SKEW_SECONDS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    signed_headers,
    verify,
)

SECRET = "change-me"
BODY = b'{"gtid":"g1","branch":"queue-a"}'
NOW = 1_700_000_000.0


def check(
    headers: dict[str, str],
    *,
    secret: str = SECRET,
    operation: str = "commit",
    body: bytes = BODY,
    now: float = NOW,
) -> None:
    verify(secret, operation, body, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER), now=now)


def test_signed_request_verifies() -> None:
    headers = signed_headers(SECRET, "commit", BODY, now=NOW)
    assert set(headers) == {TIMESTAMP_HEADER, SIGNATURE_HEADER}
    check(headers)  # does not raise


def test_signing_with_the_current_time_verifies_now() -> None:
    headers = signed_headers(SECRET, "prepare", BODY)
    verify(SECRET, "prepare", BODY, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])


def test_wrong_secret_is_refused() -> None:
    headers = signed_headers("another-secret", "commit", BODY, now=NOW)
    with pytest.raises(SignatureError, match="does not match"):
        check(headers)


def test_stale_timestamp_is_refused() -> None:
    headers = signed_headers(SECRET, "commit", BODY, now=NOW)
    with pytest.raises(SignatureError, match="stale"):
        check(headers, now=NOW + MAX_SKEW_SECONDS + 1)


def test_timestamp_too_far_in_the_future_is_refused() -> None:
    headers = signed_headers(SECRET, "commit", BODY, now=NOW + MAX_SKEW_SECONDS + 1)
    with pytest.raises(SignatureError, match="stale"):
        check(headers)


def test_timestamp_within_the_allowed_skew_verifies() -> None:
    headers = signed_headers(SECRET, "commit", BODY, now=NOW)
    check(headers, now=NOW + MAX_SKEW_SECONDS - 1)
    check(headers, now=NOW - MAX_SKEW_SECONDS + 1)


def test_signature_for_another_operation_is_refused() -> None:
    # An abort and a commit have alike bodies; a captured abort must not commit.
    headers = signed_headers(SECRET, "abort", BODY, now=NOW)
    check(headers, operation="abort")
    with pytest.raises(SignatureError, match="does not match"):
        check(headers, operation="commit")


@pytest.mark.parametrize("missing", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_missing_header_is_refused(missing: str) -> None:
    headers = signed_headers(SECRET, "commit", BODY, now=NOW)
    del headers[missing]
    with pytest.raises(SignatureError, match="not signed"):
        check(headers)


@pytest.mark.parametrize("empty", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_empty_header_is_refused(empty: str) -> None:
    headers = signed_headers(SECRET, "commit", BODY, now=NOW)
    headers[empty] = ""
    with pytest.raises(SignatureError, match="not signed"):
        check(headers)


def test_tampered_body_is_refused() -> None:
    headers = signed_headers(SECRET, "commit", BODY, now=NOW)
    tampered = BODY.replace(b"queue-a", b"queue-b")
    with pytest.raises(SignatureError, match="does not match"):
        check(headers, body=tampered)


def test_moved_timestamp_is_refused() -> None:
    # The timestamp is part of the MAC: freshening a captured request breaks it.
    headers = signed_headers(SECRET, "commit", BODY, now=NOW - 1000)
    headers[TIMESTAMP_HEADER] = f"{NOW:.3f}"
    with pytest.raises(SignatureError, match="does not match"):
        check(headers)


def test_tampered_signature_is_refused() -> None:
    headers = signed_headers(SECRET, "commit", BODY, now=NOW)
    signature = headers[SIGNATURE_HEADER]
    headers[SIGNATURE_HEADER] = ("0" if signature[0] != "0" else "1") + signature[1:]
    with pytest.raises(SignatureError, match="does not match"):
        check(headers)


def test_malformed_timestamp_is_refused() -> None:
    headers = {TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: sign(SECRET, "yesterday", "commit", BODY)}
    with pytest.raises(SignatureError, match="malformed"):
        check(headers)


@pytest.mark.parametrize("timestamp", ["nan", "inf", "-inf"])
def test_non_finite_timestamp_is_refused_even_when_signed(timestamp: str) -> None:
    # A "nan" timestamp compares as never stale, so a request signed with it would
    # stay valid forever.
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(SECRET, timestamp, "commit", BODY)}
    with pytest.raises(SignatureError):
        check(headers)


@pytest.mark.parametrize(
    "signature", ["é" * 64, "\udcff" * 64, "ab\u00e9"], ids=["latin", "undecodable-bytes", "short"]
)
def test_non_ascii_signature_is_refused_as_a_bad_signature(signature: str) -> None:
    # A header is client input: it must be refused as unauthorised, never crash the handler.
    headers = {TIMESTAMP_HEADER: f"{NOW:.3f}", SIGNATURE_HEADER: signature}
    with pytest.raises(SignatureError, match="does not match"):
        check(headers)


def test_signature_is_hmac_sha256_hex() -> None:
    signature = sign(SECRET, "1.000", "commit", BODY)
    assert len(signature) == 64
    assert int(signature, 16) >= 0
    assert signature != sign(SECRET, "1.000", "commit", BODY + b" ")
