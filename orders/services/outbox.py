"""Transactional outbox: messages are written with the change they announce and sent after commit.

`transaction.on_commit` alone loses the message when the broker is down at commit time; here the
row stays unpublished and `outbox_relay` (beat, and every worker start) sends it later.
"""

import logging
from datetime import timedelta

from celery import current_app
from django.db import transaction
from django.utils import timezone

from orders.models import OutboxMessage
from project.observability import MESSAGE_HEADER

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)


def outbox_enqueue(*, task_name: str, kwargs: dict, correlation_id: str = "") -> OutboxMessage:
    """Write a message inside the caller's transaction; it is published once that commits."""
    message = OutboxMessage.objects.create(
        task_name=task_name, kwargs=kwargs, correlation_id=correlation_id
    )
    transaction.on_commit(lambda: outbox_publish(message_id=message.pk))
    return message


def outbox_publish(*, message_id: int) -> bool | None:
    """Send one message unless another publisher holds it or it was sent already.

    Returns True when sent, False when the broker refused it, None when there was nothing to do.
    """
    now = timezone.now()
    leased = (
        OutboxMessage.objects.filter(pk=message_id, published_at__isnull=True)
        .exclude(lease_until__gt=now)
        .update(lease_until=now + LEASE)
    )
    if not leased:
        return None
    message = OutboxMessage.objects.get(pk=message_id)
    try:
        current_app.send_task(
            message.task_name,
            kwargs=message.kwargs,
            headers={MESSAGE_HEADER: message.correlation_id},
        )
    except Exception as exc:  # any broker failure: keep the row for the relay
        logger.warning(
            "outbox publish failed, the relay will retry",
            extra={"outbox_id": message_id, "error": repr(exc)},
        )
        OutboxMessage.objects.filter(pk=message_id).update(
            lease_until=None, attempts=message.attempts + 1, last_error=repr(exc)[:2000]
        )
        return False
    OutboxMessage.objects.filter(pk=message_id).update(
        published_at=timezone.now(), attempts=message.attempts + 1, lease_until=None
    )
    return True


def outbox_relay(*, limit: int = 500) -> int:
    """Publish what the after-commit hook could not. Returns how many were sent."""
    now = timezone.now()
    pending = list(
        OutboxMessage.objects.filter(published_at__isnull=True)
        .exclude(lease_until__gt=now)
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )
    sent = 0
    for message_id in pending:
        result = outbox_publish(message_id=message_id)
        if result:
            sent += 1
        elif result is False:
            break  # the broker is still down: stop hammering it, the next run tries again
    if pending:
        logger.info("outbox relay", extra={"pending": len(pending), "sent": sent})
    return sent
