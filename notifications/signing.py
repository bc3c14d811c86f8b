"""Webhook signatures as Standard Webhooks defines them (https://www.standardwebhooks.com).

Every attempt carries three headers:

- ``webhook-id``: the event's id, the same on every attempt, retry and replay of a delivery (and
  for every endpoint that receives the event): receivers deduplicate on it;
- ``webhook-timestamp``: the attempt's Unix time in whole seconds;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.

The HMAC key is the base64-decoded part of the endpoint's secret after ``whsec_``; a secret is
``whsec_`` + standard base64 of 32 random bytes (the spec asks for 24 to 64). Any Standard
Webhooks library verifies deliveries with the secret as shown (notifications/README.md shows
Python's ``standardwebhooks``); the suite checks ours with it.
"""

import base64
import binascii
import hashlib
import hmac
import secrets
import time

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"  # symmetric (HMAC-SHA256) in the spec's vocabulary

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class InvalidSecret(ValueError):
    """Not a Standard Webhooks secret (``whsec_`` + standard base64 of 24 to 64 bytes)."""


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for; strict, so a malformed secret fails loudly here
    rather than yielding a key that no receiver derives."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("a webhook secret is standard base64 after its prefix") from exc
    if not 24 <= len(key) <= 64:
        raise InvalidSecret("a webhook secret holds 24 to 64 bytes")
    return key


def sign(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of `body` sent as `message_id` at `timestamp`."""
    if "." in message_id:
        # The signed content is delimited by full stops; an id holding one would be ambiguous.
        raise ValueError("a webhook id must not contain '.'")
    signed = f"{message_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_headers(
    secret: str, *, message_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (at `timestamp`, default now)."""
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, message_id=message_id, timestamp=timestamp, body=body),
    }
