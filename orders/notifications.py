"""The order's notification kinds (registered with the notifications app in OrdersConfig.ready)."""

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from notifications.kinds import Message
from orders.models import Batch, Order, OrderStatus
from orders.presentation import order_outcome_lines, status_label

TITLES = {
    OrderStatus.CONFIRMED: _("Your order is confirmed"),
    OrderStatus.PAYMENT_DECLINED: _("Your payment was declined"),
    OrderStatus.CART_REJECTED: _("We could not fulfil your order"),
    OrderStatus.FAILED: _("Your order could not be processed"),
}


def order_outcome_dedupe_key(order: Order, *, round_: int) -> str:
    """One outcome message per order, status and replay round (the round the message was
    written for, from its context: a late message of an earlier round stays that round's)."""
    return f"order:{order.pk}:{order.status}:{round_}"


def render_order_outcome(user_id: int, context: dict) -> Message | None:
    order = Order.objects.filter(pk=context["order_id"], user_id=user_id).first()
    if order is None or not order.is_terminal:
        return None
    # The email template says what the outcome means; the body adds this order's facts in the
    # tracking page's words (orders/presentation.py), never the operator's failure_reason.
    lines = [
        gettext("Order %(id)s: %(status)s.")
        % {"id": order.pk, "status": status_label(order.status)},
        gettext("Total: %(total)s %(currency)s.")
        % {"total": order.total, "currency": order.currency},
        *order_outcome_lines(order),
    ]
    return Message(
        kind=f"order.{order.status}",
        title=str(TITLES[order.status]),
        body="\n".join(lines),
        dedupe_key=order_outcome_dedupe_key(order, round_=context.get("round", 0)),
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
