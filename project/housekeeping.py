"""Pruning shared by the apps: delete in small batches under a time budget, and the Celery
tables that grow with every task (django-celery-results' results and chord counters)."""

import time
from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone
from django_celery_results.models import ChordCounter, GroupResult, TaskResult


def delete_in_batches(queryset: QuerySet, *, batch_size: int = 1000, budget: float = 20.0) -> int:
    """Delete what `queryset` selects, `batch_size` primary keys at a time, for at most `budget`
    seconds (the next run goes on), so a large table never holds a long lock or times out.
    Returns how many rows went."""
    deadline = time.monotonic() + budget
    deleted = 0
    model = queryset.model
    while time.monotonic() < deadline:
        keys = list(queryset.values_list("pk", flat=True)[:batch_size])
        if not keys:
            break
        deleted += model.objects.filter(pk__in=keys).delete()[0]
    return deleted


def task_results_prune(*, older_than: timedelta, budget: float = 20.0) -> int:
    cutoff = timezone.now() - older_than
    return delete_in_batches(
        TaskResult.objects.filter(date_done__lt=cutoff).order_by("pk"), budget=budget / 2
    ) + delete_in_batches(
        GroupResult.objects.filter(date_done__lt=cutoff).order_by("pk"), budget=budget / 2
    )


def chord_counters_prune(*, older_than: timedelta, limit: int = 1000) -> int:
    """Counters of chords whose callback never fired (a member lost or counted twice).

    A counter has no timestamp of its own; its members' results do. A counter whose members
    all finished before the cutoff will never count down again: it is orphaned. One whose
    members have no result yet is left alone (the chord may still be running).
    """
    cutoff = timezone.now() - older_than
    orphaned = []
    for counter in ChordCounter.objects.order_by("pk")[:limit]:
        try:
            members = [result.id for result in counter.group_result().results]
        except (ValueError, TypeError, KeyError):
            orphaned.append(counter.pk)  # unreadable bookkeeping counts nothing down
            continue
        done = TaskResult.objects.filter(task_id__in=members)
        if done.exists() and not done.filter(date_done__gte=cutoff).exists():
            orphaned.append(counter.pk)
    return ChordCounter.objects.filter(pk__in=orphaned).delete()[0]
