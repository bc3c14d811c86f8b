"""Someone hears about errors: ADMINS by e-mail (mail_admins), Sentry when SENTRY_DSN is set."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from django.core import mail

from project.observability import configure_error_tracking

BASE_DIR = Path(__file__).resolve().parent.parent


def _settings_value(expression: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    environment.update(DJANGO_SETTINGS_MODULE="project.settings", **env)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import django; django.setup(); from django.conf import settings; print({expression})",
        ],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_admins_come_from_the_environment():
    admins = _settings_value(
        "settings.ADMINS", ADMINS="Ops Team <ops@example.com>, oncall@example.com"
    )
    assert (
        admins == "[('Ops Team', 'ops@example.com'), ('oncall@example.com', 'oncall@example.com')]"
    )


def test_a_failed_task_is_mailed_to_the_admins(settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.DEBUG = False
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(correlation_id="order-5", task="orders.confirm_order")
    try:
        try:
            raise RuntimeError("provider unreachable")
        except RuntimeError:
            # What django-structlog writes when a task raises.
            structlog.get_logger("django_structlog.celery.receivers").exception("task_failed")
    finally:
        structlog.contextvars.clear_contextvars()
    (message,) = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject.endswith("ERROR: task_failed orders.confirm_order order-5")
    assert "provider unreachable" in message.body
    assert '"correlation_id": "order-5"' in message.body or "correlation_id=order-5" in message.body


def test_routine_lines_are_not_mailed(settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.DEBUG = False
    structlog.get_logger("django_structlog.celery.receivers").warning("task_retrying")
    logging.getLogger("orders.timeline").error("not a request or task failure")
    assert mail.outbox == []


@pytest.mark.django_db
def test_a_server_error_is_mailed_to_the_admins(settings, client):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.DEBUG = False
    logging.getLogger("django.request").error(
        "Internal Server Error: /x", extra={"status_code": 500}
    )
    (message,) = mail.outbox
    assert "Internal Server Error: /x" in message.subject


def test_sentry_starts_only_with_a_dsn():
    assert configure_error_tracking({}) is False
    assert configure_error_tracking({"SENTRY_DSN": "  "}) is False


def test_sentry_reports_through_its_django_and_celery_integrations():
    """A process of its own: the SDK, once started, stays started."""
    program = (
        "import sentry_sdk\n"
        "from project.observability import configure_error_tracking\n"
        "assert configure_error_tracking({'SENTRY_DSN': 'https://key@sentry.example.com/1'})\n"
        "client = sentry_sdk.get_client()\n"
        "assert client.is_active()\n"
        "names = sorted(client.integrations)\n"
        "assert 'django' in names and 'celery' in names, names\n"
        "assert client.options['send_default_pii'] is False\n"
        "print('ok')\n"
    )
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
