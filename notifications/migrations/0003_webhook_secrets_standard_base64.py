"""Rewrite the endpoints' secrets in the Standard Webhooks form, keeping their random bytes.

Secrets used to be ``whsec_`` + URL-safe base64 without padding (``secrets.token_urlsafe(32)``)
and the whole string was the HMAC key. Standard Webhooks reads the part after ``whsec_`` as
standard base64 and keys the HMAC with the decoded bytes; its libraries decode a URL-safe
string leniently (``-`` and ``_`` dropped) into another key, so such a secret would silently
fail every verification. The same 32 random bytes are written again in standard base64: a
receiver converts the secret it holds the same way (notifications/README.md shows how), and no
secret has to be regenerated or shown again. Reversible: backwards restores the URL-safe form.

Self-contained on purpose: a migration must not change when the app's code does.
"""

import base64
import binascii

from django.db import migrations

PREFIX = "whsec_"
URLSAFE_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _standard_bytes(encoded: str) -> bytes | None:
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if 24 <= len(key) <= 64 else None


def _urlsafe_bytes(encoded: str) -> bytes | None:
    if not encoded or not set(encoded) <= URLSAFE_ALPHABET:
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return None


def to_standard(secret: str) -> str:
    """The Standard Webhooks spelling of a legacy secret; a standard one is left as it is."""
    if not secret.startswith(PREFIX):
        return secret
    encoded = secret.removeprefix(PREFIX)
    if _standard_bytes(encoded) is not None:
        return secret
    key = _urlsafe_bytes(encoded)
    return secret if key is None else PREFIX + base64.b64encode(key).decode()


def to_legacy(secret: str) -> str:
    if not secret.startswith(PREFIX):
        return secret
    key = _standard_bytes(secret.removeprefix(PREFIX))
    return secret if key is None else PREFIX + base64.urlsafe_b64encode(key).decode().rstrip("=")


def _rewrite(apps, convert) -> None:
    endpoint_model = apps.get_model("notifications", "WebhookEndpoint")
    for endpoint in endpoint_model.objects.only("pk", "secret").iterator():
        secret = convert(endpoint.secret)
        if secret != endpoint.secret:
            endpoint_model.objects.filter(pk=endpoint.pk).update(secret=secret)


def forwards(apps, schema_editor) -> None:
    _rewrite(apps, to_standard)


def backwards(apps, schema_editor) -> None:
    _rewrite(apps, to_legacy)


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_webhookdelivery_webhookattempt_webhookendpoint_and_more"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
