"""Claims that decide which process may send an order's canvas: exactly one per generation."""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from orders import workflow
from orders.models import Order

from .events import event_record
from .leases import lease_duration


@dataclass(frozen=True)
class Dispatch:
    """What a task sends: the order's canvas from `from_step`, stamped with generation `run`."""

    order_id: str
    run: int
    from_step: str
    line_ids: tuple[int, ...]
    lane: str = "single"  # "batch" for a batch's orders: they queue behind single orders


def order_dispatch_claim(
    *, order_id: str, run: int, from_step: str | None = None, reason: str = "start"
) -> Dispatch | None:
    """Claim generation `run + 1` of the order's pipeline, if `run` is still the current one.

    Every sender (the first start, a replay, a recovery sweep, however many copies of each run at
    once) claims with the generation it saw; one wins, the others get None. Messages of older
    generations do nothing when they arrive (a redelivery after a crash).
    """
    now = timezone.now()
    with transaction.atomic():
        claimed = Order.objects.filter(
            pk=order_id, run=run, status__in=workflow.ACTIVE_STATUSES
        ).update(
            run=F("run") + 1,
            lease_until=now + lease_duration(),
            lease_holder="",
            pipeline_started_at=now,
        )
        if not claimed:
            return None
        order = Order.objects.get(pk=order_id)
        step = from_step or workflow.STEP_FOR_STATUS[order.status]
        if reason != "start":
            event_record(order=order, name="redispatched", detail={"step": step, "why": reason})
        line_ids = tuple(order.lines.values_list("pk", flat=True))
    return Dispatch(
        order_id=str(order.pk),
        run=order.run,
        from_step=step,
        line_ids=line_ids,
        lane=workflow.lane_of(order),
    )


def order_message_is_current(*, order_id: str, run: int | None) -> bool:
    """Whether a step's message belongs to the order's current generation (None: unstamped)."""
    if run is None:
        return True
    return Order.objects.filter(pk=order_id, run=run).exists()
