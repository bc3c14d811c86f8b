import logging

from django.db import transaction

from orders import workflow
from orders.models import DeadLetter, Order, OrderStatus, Payment

from .events import event_record
from .leases import lease_handoff
from .outbox import outbox_enqueue
from .outcomes import order_finish
from .settlement import FAILED_REASON

logger = logging.getLogger(__name__)


def order_step_retry_record(
    *, order_id: str, step: str, attempt: int, error: str, countdown: float, throttled: bool
) -> None:
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return
    event_record(
        order=order,
        name="provider_throttled" if throttled else "step_retry",
        attempt=attempt,
        detail={"step": step, "error": error, "retry_in": round(countdown, 2)},
    )


def order_step_interrupt_record(*, order_id: str, step: str, error: str) -> None:
    """The broker could not take a step's retry or next link. The order keeps its status and its
    lease runs out: recovery re-dispatches it once the broker is back; it is not a failure."""
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return
    logger.warning(
        "step interrupted by the broker, recovery will re-dispatch",
        extra={"order_id": order_id, "step": step, "error": error},
    )
    event_record(order=order, name="step_interrupted", detail={"step": step, "error": error})


def _needs_settlement(order: Order) -> bool:
    """Anything the provider or the shelf may hold: ask before calling it failed."""
    return (
        workflow.OWES.get(order.status, workflow.NOTHING).anything
        or order.stock_held
        or Payment.objects.filter(order=order).exists()
    )


def order_fail(
    *,
    order_id: str,
    step: str,
    task_name: str,
    task_id: str,
    args: list,
    kwargs: dict,
    exception: str,
    traceback: str,
    attempts: int,
    reason: str = "out_of_retries",
) -> Order | None:
    """A step cannot finish (out of retries, a final error, a poisoned message): dead-letter it,
    then settle the order (or end it `failed` at once when it holds nothing)."""
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None:
            logger.error("step failed for an unknown order", extra={"order_id": order_id})
            return None
        if order.status not in workflow.ACTIVE_STATUSES or order.status == OrderStatus.SETTLING:
            return order
        DeadLetter.objects.create(
            order=order,
            task_name=task_name,
            task_id=task_id or "",
            step=step,
            args=list(args or []),
            kwargs=dict(kwargs or {}),
            exception=exception,
            traceback=traceback,
            correlation_id=order.correlation_id,
            attempts=attempts,
            reason=reason,
        )
        order.failed_from_status = order.status
        order.failed_step = step
        event_record(
            order=order,
            name="step_failed",
            attempt=attempts,
            detail={"step": step, "task": task_name, "error": exception, "why": reason},
        )
        if not _needs_settlement(order):
            order.save(update_fields=["failed_from_status", "failed_step"])
            return order_finish(
                order=order,
                status=OrderStatus.FAILED,
                attempt=attempts,
                reason=FAILED_REASON,
                detail={"step": step},
            )
        # A new generation: whatever copy of the failed step is still in flight does nothing.
        order.run += 1
        order.status = OrderStatus.SETTLING
        order.save(
            update_fields=[
                "failed_from_status",
                "failed_step",
                "status",
                "run",
                "updated_at",
                *lease_handoff(order),
            ]
        )
        event_record(order=order, name="settling", detail={"from": order.failed_from_status})
        outbox_enqueue(
            task_name=workflow.SETTLE_ORDER,
            kwargs={"order_id": str(order.pk), "run": order.run, "lane": workflow.lane_of(order)},
            correlation_id=order.correlation_id,
        )
    return order
