"""The one path by which an order ends: its terminal status, the timeline, the customer's
notification and the batch's check, in the transaction that writes the status."""

from orders import workflow
from orders.models import Order, OrderStatus

from .events import event_record
from .outbox import outbox_enqueue


def order_outcome_notification_kwargs(*, order: Order) -> dict:
    return {
        "kind": "order.outcome",
        "user_id": order.user_id,
        "context": {"order_id": str(order.pk), "round": order.replays},
    }


def order_finish(
    *,
    order: Order,
    status: OrderStatus,
    attempt: int = 1,
    reason: str = "",
    detail: dict | None = None,
) -> Order:
    """End a locked order (the caller holds `select_for_update` in its transaction)."""
    assert status in workflow.OWES and status not in workflow.ACTIVE_STATUSES
    order.status = status
    order.failure_reason = reason
    order.lease_until = None
    order.lease_holder = ""
    order.save(
        update_fields=["status", "failure_reason", "lease_until", "lease_holder", "updated_at"]
    )
    event_record(order=order, name=str(status), attempt=attempt, detail=detail or {})
    outbox_enqueue(
        task_name=workflow.NOTIFY,
        kwargs=order_outcome_notification_kwargs(order=order),
        correlation_id=order.correlation_id,
    )
    if order.batch_id and not (
        Order.objects.filter(batch_id=order.batch_id, status__in=workflow.ACTIVE_STATUSES)
        .exclude(pk=order.pk)
        .exists()
    ):
        # Two last orders ending at once may each still see the other: the recovery sweep's
        # batch check (batch_finish_all_done) is the safety net for that.
        outbox_enqueue(
            task_name=workflow.FINISH_BATCH,
            kwargs={"batch_id": str(order.batch_id)},
            correlation_id=order.correlation_id,
        )
    return order
