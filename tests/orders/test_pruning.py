"""Tables that stop growing: each pruner deletes only what is past its retention and finished,
in batches, and a large table is pruned within the time budget (the next run goes on)."""

import json
from datetime import timedelta

from django.utils import timezone
from django_celery_results.models import ChordCounter, TaskResult

from notifications.models import (
    Notification,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from notifications.services import webhook_attempts_prune
from orders.models import OutboxMessage
from orders.services import outbox_prune
from orders.tasks import prune_tables
from project.housekeeping import chord_counters_prune, delete_in_batches, task_results_prune


def _ago(**kwargs):
    return timezone.now() - timedelta(**kwargs)


def test_outbox_prune_keeps_undelivered_and_recent_rows(db):
    OutboxMessage.objects.bulk_create(
        [OutboxMessage(task_name="t", published_at=_ago(days=10)) for _ in range(2500)]
        + [
            OutboxMessage(task_name="recent", published_at=_ago(hours=1)),
            OutboxMessage(task_name="undelivered", published_at=None),
        ]
    )
    OutboxMessage.objects.filter(task_name="undelivered").update(created_at=_ago(days=30))

    assert outbox_prune(older_than=timedelta(days=7)) == 2500

    assert sorted(OutboxMessage.objects.values_list("task_name", flat=True)) == [
        "recent",
        "undelivered",
    ]


def test_a_large_table_is_pruned_in_batches_within_the_budget(db):
    OutboxMessage.objects.bulk_create(
        [OutboxMessage(task_name="t", published_at=_ago(days=10)) for _ in range(3000)]
    )
    old = OutboxMessage.objects.filter(published_at__lt=_ago(days=7)).order_by("pk")

    assert delete_in_batches(old, batch_size=1000, budget=0) == 0  # no time: nothing, no error
    assert delete_in_batches(old, batch_size=1000, budget=30) == 3000


def test_task_results_and_orphaned_chord_counters_are_pruned(db):
    TaskResult.objects.create(task_id="old", status="SUCCESS")
    TaskResult.objects.create(task_id="new", status="SUCCESS")
    TaskResult.objects.filter(task_id="old").update(date_done=_ago(days=10))
    # A chord whose members ended long ago (its callback never fired), and a running one.
    for group_id, member in (("g-old", "old"), ("g-new", "new"), ("g-running", "unfinished")):
        ChordCounter.objects.create(
            group_id=group_id, sub_tasks=json.dumps([[[member, None], None]]), count=1
        )

    # Counters first: they are judged by their members' results, which go next.
    assert chord_counters_prune(older_than=timedelta(days=1)) == 1
    assert task_results_prune(older_than=timedelta(days=7)) == 1

    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["new"]
    assert sorted(ChordCounter.objects.values_list("group_id", flat=True)) == [
        "g-new",
        "g-running",
    ]
    assert set(prune_tables()) == {"outbox", "task_results", "chord_counters"}


def test_old_webhook_attempts_of_finished_deliveries_are_pruned(db, customer):
    endpoint = WebhookEndpoint.objects.create(
        user=customer, url="https://example.com/hook", events=["*"], secret="whsec_x"
    )
    finished, pending = (
        WebhookDelivery.objects.create(
            endpoint=endpoint,
            notification=Notification.objects.create(
                user=customer, kind="order.confirmed", title="t", dedupe_key=f"k-{status}"
            ),
            event_kind="order.confirmed",
            event_id=f"evt_{status}",
            status=status,
            payload={},
        )
        for status in (WebhookDeliveryStatus.SUCCEEDED, WebhookDeliveryStatus.PENDING)
    )
    for delivery in (finished, pending):
        WebhookAttempt.objects.create(delivery=delivery, attempted_at=_ago(days=40))
        WebhookAttempt.objects.create(delivery=delivery, attempted_at=_ago(days=1))

    assert webhook_attempts_prune(older_than=timedelta(days=30)) == 1

    assert WebhookAttempt.objects.filter(delivery=finished).count() == 1
    assert WebhookAttempt.objects.filter(delivery=pending).count() == 2
