"""The order's notification kinds (registered with the notifications app in OrdersConfig.ready)."""

from notifications.kinds import Message
from orders.models import Batch, Order, OrderStatus

TITLES = {
    OrderStatus.CONFIRMED: "Your order is confirmed",
    OrderStatus.PAYMENT_DECLINED: "Your payment was declined",
    OrderStatus.CART_REJECTED: "We could not fulfil your order",
    OrderStatus.FAILED: "Your order could not be processed",
}


def order_outcome_dedupe_key(order: Order) -> str:
    """One outcome message per order, status and replay round."""
    return f"order:{order.pk}:{order.status}:{order.replays}"


def render_order_outcome(user_id: int, context: dict) -> Message | None:
    order = Order.objects.filter(pk=context["order_id"], user_id=user_id).first()
    if order is None or not order.is_terminal:
        return None
    lines = [
        f"Order {order.pk}: {order.get_status_display()}.",
        f"Total: {order.total} {order.currency}.",
    ]
    if order.status == OrderStatus.CART_REJECTED:
        lines.append("Your payment authorization was released; you have not been charged.")
    if order.failure_reason:
        lines.append(f"Reason: {order.failure_reason}")
    return Message(
        kind=f"order.{order.status}",
        title=TITLES[order.status],
        body="\n".join(lines),
        dedupe_key=f"order:{order.pk}:{order.status}:{context.get('round', 0)}",  # as above
        data={"order_id": str(order.pk), "status": order.status},
    )


def render_batch_finished(user_id: int, context: dict) -> Message | None:
    batch = Batch.objects.filter(pk=context["batch_id"], user_id=user_id).first()
    if batch is None or batch.finished_at is None:
        return None
    counts = ", ".join(f"{count} {status}" for status, count in sorted(batch.summary.items()))
    return Message(
        kind="batch.finished",
        title=f"Your batch of {batch.size} orders is done",
        body=f"Batch {batch.pk}: {counts}.",
        dedupe_key=f"batch:{batch.pk}:finished",
        data={"batch_id": str(batch.pk), "counts": batch.summary},
    )
