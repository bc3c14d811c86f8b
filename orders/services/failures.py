import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from orders.errors import OrderflowError
from orders.models import DeadLetter, Order, OrderStatus

from .events import event_record
from .orders import FINISH_BATCH_TASK, START_PIPELINE_TASK
from .outbox import outbox_enqueue

logger = logging.getLogger(__name__)

NOTIFY_TASK = "notifications.notify"


class ReplayNotAllowed(OrderflowError):
    """Only a failed order can be replayed."""


def order_outcome_notify_enqueue(*, order: Order) -> None:
    """Queue the outcome notification (inside the caller's transaction, via the outbox)."""
    outbox_enqueue(
        task_name=NOTIFY_TASK,
        kwargs=order_outcome_notification_kwargs(order=order),
        correlation_id=order.correlation_id,
    )


def order_outcome_notification_kwargs(*, order: Order) -> dict:
    return {
        "kind": "order.outcome",
        "user_id": order.user_id,
        "context": {"order_id": str(order.pk), "round": order.replays},
    }


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
    """The broker could not take a step's retry or next link. The order keeps its status and the
    stuck-order sweeper moves it on from there once the broker is back; it is not a failure."""
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return
    logger.warning(
        "step interrupted by the broker, the sweeper will re-dispatch",
        extra={"order_id": order_id, "step": step, "error": error},
    )
    event_record(order=order, name="step_interrupted", detail={"step": step, "error": error})


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
) -> Order | None:
    """A step is out of retries (or hit a final error): dead-letter it and fail the order."""
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None:
            logger.error("step failed for an unknown order", extra={"order_id": order_id})
            return None
        if order.is_terminal:
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
        )
        order.failed_from_status = order.status
        order.failed_step = step
        order.status = OrderStatus.FAILED
        order.failure_reason = f"{step} failed after {attempts} attempt(s): {exception}"
        order.save(
            update_fields=[
                "failed_from_status",
                "failed_step",
                "status",
                "failure_reason",
                "updated_at",
            ]
        )
        event_record(
            order=order,
            name="failed",
            attempt=attempts,
            detail={"step": step, "task": task_name, "error": exception},
        )
        order_outcome_notify_enqueue(order=order)
        if order.batch_id:  # the failure broke the batch's chord: check completion here
            outbox_enqueue(
                task_name=FINISH_BATCH_TASK,
                kwargs={"batch_id": str(order.batch_id)},
                correlation_id=order.correlation_id,
            )
    return order


def replay_order(*, order_id: str, actor: AbstractBaseUser | None = None) -> Order:
    """Re-run a failed order from the step that failed; steps already done are not repeated."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status != OrderStatus.FAILED:
            raise ReplayNotAllowed(
                f"Order {order.pk} is {order.status}; only failed orders replay."
            )
        step = order.failed_step
        order.status = order.failed_from_status or OrderStatus.ACCEPTED
        order.failure_reason = ""
        order.failed_step = ""
        order.failed_from_status = ""
        order.replays += 1
        order.save(
            update_fields=[
                "status",
                "failure_reason",
                "failed_step",
                "failed_from_status",
                "replays",
                "updated_at",
            ]
        )
        order.dead_letters.filter(replayed_at__isnull=True).update(replayed_at=timezone.now())
        event_record(
            order=order,
            name="replayed",
            detail={"from_step": step, "by": getattr(actor, "username", None) or "system"},
        )
        outbox_enqueue(
            task_name=START_PIPELINE_TASK,
            kwargs={"order_id": str(order.pk), "from_step": step},
            correlation_id=order.correlation_id,
        )
    return order
