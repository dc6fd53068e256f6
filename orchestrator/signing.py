"""HMAC-SHA256 signatures for webhooks, the same scheme in both directions.

Inbound webhooks (an external failover tool telling us it moved a primary) and outbound events
(the outbox delivering to configured URLs) are signed alike:

    X-Orchestrator-Timestamp: <unix seconds, integer>
    X-Orchestrator-Signature: sha256=<hex HMAC-SHA256(secret, b"<timestamp>." + body)>

The timestamp is inside the MAC, so a captured request cannot be re-dated; a receiver refuses
timestamps more than `max_age_s` away from its clock in either direction and remembers the
signatures it accepted until they would be stale anyway (that part is the receiver's job; see
`orchestrator.webhooks`). Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Orchestrator-Timestamp"
SIGNATURE_HEADER = "X-Orchestrator-Signature"
EVENT_ID_HEADER = "X-Orchestrator-Event-Id"
SCHEME = "sha256="

# Reasons carried by SignatureError; callers (and tests) branch on these, never on message text.
MISSING = "missing"
MALFORMED = "malformed"
STALE = "stale"
BAD_SIGNATURE = "bad signature"


class SignatureError(Exception):
    """A request's signature was refused; `reason` is one of the module's reason constants."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def compute(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The hex MAC of `body` at `timestamp` (without the `sha256=` prefix)."""
    return hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two headers that sign `body` at time `now` (default: the current time)."""
    ts = int(now if now is not None else time.time())
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: SCHEME + compute(secret, body, ts)}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts and aiohttp's CIMultiDict alike."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for k, v in headers.items():
        if k.lower() == lower:
            return v
    return None


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    max_age_s: float = 300.0,
) -> None:
    """Accept (return None) or refuse (raise SignatureError) a signed request.

    Checks in order: both headers present, well-formed, timestamp within `max_age_s` of `now`
    (either direction), then the MAC itself in constant time.
    """
    if not _key(secret):
        raise SignatureError(MISSING, "no secret configured")
    ts_text = _header(headers, TIMESTAMP_HEADER)
    sig_text = _header(headers, SIGNATURE_HEADER)
    if not ts_text or not sig_text:
        missing = [
            h for h, v in ((TIMESTAMP_HEADER, ts_text), (SIGNATURE_HEADER, sig_text)) if not v
        ]
        raise SignatureError(MISSING, ", ".join(missing))
    ts_text, sig_text = ts_text.strip(), sig_text.strip()
    if not ts_text.isascii() or not ts_text.isdigit() or len(ts_text) > 12:
        raise SignatureError(MALFORMED, f"{TIMESTAMP_HEADER} is not unix seconds")
    digest = sig_text[len(SCHEME) :].lower() if sig_text.startswith(SCHEME) else None
    if digest is None or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise SignatureError(MALFORMED, f"{SIGNATURE_HEADER} is not {SCHEME}<64 hex digits>")
    ts = int(ts_text)
    current = now if now is not None else time.time()
    if abs(current - ts) > max_age_s:
        when = "old" if ts < current else "in the future"
        raise SignatureError(STALE, f"timestamp {ts} is {abs(current - ts):.0f}s {when}")
    expected = compute(secret, body, ts)
    if not hmac.compare_digest(expected, digest):
        raise SignatureError(BAD_SIGNATURE)


def signature_of(headers: Mapping[str, str]) -> str:
    """The hex digest a (verified) request carries: the identity used to refuse replays."""
    text = (_header(headers, SIGNATURE_HEADER) or "").strip()
    return (text[len(SCHEME) :] if text.startswith(SCHEME) else text).lower()
