from datetime import timedelta

from django.utils import timezone

from orders.models import OutboxMessage
from project.housekeeping import delete_in_batches


def outbox_prune(*, older_than: timedelta, budget: float = 20.0) -> int:
    """Delivered outbox messages past their retention (undelivered ones are never pruned)."""
    cutoff = timezone.now() - older_than
    return delete_in_batches(
        OutboxMessage.objects.filter(published_at__lt=cutoff).order_by("pk"), budget=budget
    )
