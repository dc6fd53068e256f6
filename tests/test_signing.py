"""Webhook signatures (pure): the scheme shared by inbound webhooks and outbound events."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from orchestrator.signing import (
    BAD_SIGNATURE,
    MALFORMED,
    MISSING,
    SIGNATURE_HEADER,
    STALE,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    signature_of,
    verify,
)

SECRET = "s3cret"
BODY = b'{"tablet":"zone1-102"}'
NOW = 1_700_000_000.0


def reason(headers: dict[str, str], body: bytes = BODY, now: float = NOW, **kw: object) -> str:
    with pytest.raises(SignatureError) as e:
        verify(SECRET, headers, body, now=now, **kw)  # type: ignore[arg-type]
    return e.value.reason


def test_sign_then_verify_round_trip() -> None:
    headers = sign(SECRET, BODY, now=NOW)
    assert headers[TIMESTAMP_HEADER] == str(int(NOW))
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    verify(SECRET, headers, BODY, now=NOW + 10, max_age_s=300)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    headers = sign(SECRET, BODY, now=NOW)
    expected = hmac.new(SECRET.encode(), f"{int(NOW)}.".encode() + BODY, hashlib.sha256)
    assert headers[SIGNATURE_HEADER] == "sha256=" + expected.hexdigest()
    assert signature_of(headers) == expected.hexdigest()


def test_headers_are_matched_case_insensitively() -> None:
    headers = {k.lower(): v for k, v in sign(SECRET, BODY, now=NOW).items()}
    verify(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("drop", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_missing_header_is_refused_as_missing(drop: str) -> None:
    headers = sign(SECRET, BODY, now=NOW)
    del headers[drop]
    assert reason(headers) == MISSING
    assert reason({}) == MISSING


@pytest.mark.parametrize(
    "ts, sig",
    [
        ("yesterday", None),
        ("-5", None),
        ("1.5e9", None),
        (None, "md5=abcd"),
        (None, "sha256=xyz"),
        (None, "sha256=" + "a" * 63),
        (None, "a" * 64),
    ],
)
def test_malformed_headers_are_refused_as_malformed(ts: str | None, sig: str | None) -> None:
    headers = sign(SECRET, BODY, now=NOW)
    if ts is not None:
        headers[TIMESTAMP_HEADER] = ts
    if sig is not None:
        headers[SIGNATURE_HEADER] = sig
    assert reason(headers) == MALFORMED


def test_old_timestamp_is_refused_as_stale() -> None:
    headers = sign(SECRET, BODY, now=NOW - 301)
    assert reason(headers, max_age_s=300) == STALE
    verify(SECRET, sign(SECRET, BODY, now=NOW - 299), BODY, now=NOW, max_age_s=300)


def test_future_timestamp_is_refused_as_stale() -> None:
    headers = sign(SECRET, BODY, now=NOW + 301)
    assert reason(headers, max_age_s=300) == STALE
    verify(SECRET, sign(SECRET, BODY, now=NOW + 299), BODY, now=NOW, max_age_s=300)


def test_wrong_secret_is_refused_as_bad_signature() -> None:
    assert reason(sign("other", BODY, now=NOW)) == BAD_SIGNATURE


def test_tampered_body_is_refused_as_bad_signature() -> None:
    headers = sign(SECRET, BODY, now=NOW)
    assert reason(headers, body=b'{"tablet":"zone1-103"}') == BAD_SIGNATURE


def test_redated_signature_is_refused_as_bad_signature() -> None:
    headers = sign(SECRET, BODY, now=NOW)
    headers[TIMESTAMP_HEADER] = str(int(NOW) + 1)
    assert reason(headers) == BAD_SIGNATURE


def test_no_secret_refuses_everything() -> None:
    with pytest.raises(SignatureError):
        verify("", sign("", BODY, now=NOW), BODY, now=NOW)
