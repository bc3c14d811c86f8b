"""Migration 0003 rewrites legacy secrets in the Standard Webhooks form, on the real schema."""

import base64
import importlib
import secrets

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from standardwebhooks import Webhook

from notifications import signing
from tests.notifications.test_signing import documented

BEFORE = [("notifications", "0002_webhookdelivery_webhookattempt_webhookendpoint_and_more")]
AFTER = [("notifications", "0003_webhook_secrets_standard_base64")]
migration = importlib.import_module("notifications.migrations.0003_webhook_secrets_standard_base64")


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def at_0002(transactional_db):
    """The schema and data as 0002 left them; the latest schema again afterwards."""
    apps = migrate(BEFORE)
    yield apps
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def legacy_secret(key: bytes) -> str:
    return "whsec_" + base64.urlsafe_b64encode(key).decode().rstrip("=")


def test_legacy_secrets_are_rewritten_keeping_their_bytes_and_back(at_0002):
    user_model = at_0002.get_model("auth", "User")
    endpoint_model = at_0002.get_model("notifications", "WebhookEndpoint")
    user = user_model.objects.create(username="legacy")
    keys = [secrets.token_bytes(32) for _ in range(20)] + [b"\xfb\xff" * 16]  # "-" and "_"
    legacy = [legacy_secret(key) for key in keys]
    for secret in legacy:
        endpoint_model.objects.create(user=user, url="https://example.com/h", secret=secret)
    already = signing.secret_generate()
    endpoint_model.objects.create(user=user, url="https://example.com/h", secret=already)

    apps = migrate(AFTER)

    rewritten = list(
        apps.get_model("notifications", "WebhookEndpoint")
        .objects.order_by("pk")
        .values_list("secret", flat=True)
    )
    assert rewritten[-1] == already  # a secret already in the standard form stays as it is
    for key, secret in zip(keys, rewritten[:-1], strict=True):
        assert signing.secret_key(secret) == key
        headers = signing.signature_headers(secret, message_id="evt_1", body=b"{}")
        assert Webhook(secret).verify(b"{}", headers) == {}
    # The conversion documented for receivers gives them the same secret.
    standard_secret = documented("standard_secret")
    assert [standard_secret(secret) for secret in legacy] == rewritten[:-1]

    apps = migrate(BEFORE)

    restored = list(
        apps.get_model("notifications", "WebhookEndpoint")
        .objects.order_by("pk")
        .values_list("secret", flat=True)
    )
    assert restored[:-1] == legacy


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!", "no prefix", ""])
def test_a_secret_that_is_neither_form_is_left_alone(secret):
    assert migration.to_standard(secret) == secret
    assert migration.to_legacy(secret) == secret
