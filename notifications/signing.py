"""Webhook signatures (documented for receivers in notifications/README.md).

Header ``Orderflow-Signature: t=<unix ts>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, keyed with
the endpoint's whole secret (``whsec_...``) as UTF-8. The timestamp is inside the signed bytes,
so a receiver that refuses old timestamps also refuses a captured request replayed later.

``verify_signature`` is the receiver's side, word for word the snippet in the README.
"""

import hashlib
import hmac
import time


def sign_payload(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The Orderflow-Signature header value for `body` sent at `timestamp` (default: now)."""
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """True if the Orderflow-Signature `header` signs the raw request `body` with `secret`.

    Refuses a timestamp more than `tolerance` seconds from now (a replayed old request).
    Several v1= entries may be present (e.g. during a secret rotation); one match suffices.
    """
    if isinstance(body, str):
        body = body.encode()
    timestamp, signatures = None, []
    for item in (header or "").split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.encode())
    if timestamp is None or abs(time.time() - timestamp) > tolerance:
        return False
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)
