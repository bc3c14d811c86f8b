"""Finish what crashes and lost messages left behind."""

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from notifications.models import Notification
from orders.models import TERMINAL_STATUSES, Order, OrderStatus
from orders.notifications import order_outcome_dedupe_key

from .events import event_record
from .failures import order_outcome_notify_enqueue
from .orders import START_PIPELINE_TASK
from .outbox import outbox_enqueue

logger = logging.getLogger(__name__)

# The step that moves an unfinished order on from each status.
STEP_FOR_STATUS = {
    OrderStatus.ACCEPTED: "authorize_payment",
    OrderStatus.PAYMENT_AUTHORIZED: "check_cart",
    OrderStatus.CART_VERIFIED: "confirm_order",
    OrderStatus.STOCK_RESERVED: "confirm_order",
    OrderStatus.COMPENSATING: "confirm_order",
}


def order_stuck_sweep(*, stuck_for: timedelta, limit: int = 200) -> list[str]:
    """Re-dispatch unfinished orders that showed no progress (status change or timeline event)
    for `stuck_for`, from the step their status calls for. Returns the order ids.

    A message can vanish (a flushed queue, a broker restart without persistence) or wait out a
    visibility timeout after a crash; steps are idempotent, so a re-dispatch that races the
    original message does nothing twice.
    """
    cutoff = timezone.now() - stuck_for
    stuck = (
        Order.objects.filter(status__in=STEP_FOR_STATUS, updated_at__lt=cutoff)
        .annotate(last_event_at=Max("events__created_at"))
        .filter(Q(last_event_at__lt=cutoff) | Q(last_event_at__isnull=True))
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    redispatched = []
    for order_id in stuck:
        with transaction.atomic():
            order = Order.objects.select_for_update().get(pk=order_id)
            step = STEP_FOR_STATUS.get(order.status)
            if step is None:
                continue  # finished meanwhile
            event_record(order=order, name="redispatched", detail={"step": step})
            outbox_enqueue(
                task_name=START_PIPELINE_TASK,
                kwargs={"order_id": str(order.pk), "from_step": step},
                correlation_id=order.correlation_id,
            )
        redispatched.append(str(order_id))
    if redispatched:
        logger.warning("re-dispatched stuck orders", extra={"orders": redispatched})
    return redispatched


def order_outcome_notification_sweep(
    *, ended_before: timedelta, window: timedelta = timedelta(minutes=10), limit: int = 500
) -> list[str]:
    """Send again the outcome notification of orders that ended between `ended_before + window`
    and `ended_before` ago and have none (the notify message was lost with the broker's queue).
    Returns the order ids.

    Notifications are deduplicated by key, so an original that was only late changes nothing.
    Each order is looked at while it is in the window, i.e. on every sweep for `window`.
    """
    now = timezone.now()
    ended = Order.objects.filter(
        status__in=TERMINAL_STATUSES,
        updated_at__lt=now - ended_before,
        updated_at__gte=now - ended_before - window,
    ).order_by("updated_at")[:limit]
    by_key = {order_outcome_dedupe_key(order): order for order in ended}
    notified = set(
        Notification.objects.filter(dedupe_key__in=by_key).values_list("dedupe_key", flat=True)
    )
    resent = []
    for key, order in by_key.items():
        if key in notified:
            continue
        with transaction.atomic():
            event_record(order=order, name="notification_resent", detail={"key": key})
            order_outcome_notify_enqueue(order=order)
        resent.append(str(order.pk))
    if resent:
        logger.warning("re-sent lost outcome notifications", extra={"orders": resent})
    return resent
