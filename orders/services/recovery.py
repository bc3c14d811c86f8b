"""Finish what crashes and lost messages left behind."""

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from orders.models import Order, OrderStatus

from .events import event_record
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
