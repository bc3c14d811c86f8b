"""Thin tasks: take ids, call one service. Both are acks_late and idempotent at the database."""

from datetime import timedelta
from smtplib import SMTPException

import redis
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import services


@shared_task(
    name="notifications.notify",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(SMTPException, OSError, OperationalError),
    retry_backoff=True,
    retry_backoff_max=60,  # under the countdown cap (project/celery.py checks)
    retry_jitter=True,
    max_retries=8,
)
def notify(kind: str, user_id: int, context: dict) -> int | None:
    """The one notification task every flow uses: render `kind` for the user, deliver it."""
    notification = services.notification_send(kind=kind, user_id=user_id, context=context)
    return notification.pk if notification else None


@shared_task(
    name=services.DELIVER_WEBHOOK_TASK,
    queue="notifications",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # Our own infrastructure failing (database, the limiter's Redis); HTTP outcomes of the
    # endpoint are not exceptions: the service records them and says when to come back.
    autoretry_for=(OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def deliver_webhook(delivery_id: int) -> str:
    """One attempt of a webhook delivery; schedules the next one when the service asks."""
    try:
        outcome = services.webhook_delivery_send(delivery_id=delivery_id)
    except SoftTimeLimitExceeded:
        outcome = services.webhook_delivery_time_limit_record(delivery_id=delivery_id)
    if outcome.retry_in is not None:
        services.webhook_delivery_enqueue(delivery_id=delivery_id, countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="notifications.sweep_webhook_deliveries", acks_late=True, ignore_result=True)
def sweep_webhook_deliveries() -> int:
    return services.webhook_deliveries_sweep(
        overdue_for=timedelta(seconds=settings.WEBHOOK_SWEEP_OVERDUE_SECONDS)
    )


@shared_task(name="notifications.prune_webhook_attempts", acks_late=True, ignore_result=True)
def prune_webhook_attempts() -> int:
    return services.webhook_attempts_prune(
        older_than=timedelta(days=settings.PRUNE_WEBHOOK_ATTEMPTS_AFTER_DAYS)
    )
