"""Settlement: an order that cannot finish is not called terminal until what it holds is undone.

What each status holds is `workflow.OWES`. Settlement asks the provider what really happened to
the order's payment (never assumes from our own rows, which may lag a lost answer), then:

* captured while the stock is reserved: the order did go through; it ends `confirmed`;
* otherwise any authorization or capture is refunded (voided), the stock is put back, and the
  order ends `failed`: nothing captured, no hold left, no stock held.

Each effect is idempotent (provider calls by key, stock by a flag cleared once), so a settlement
interrupted anywhere is simply run again, by its own retries or by recovery.
"""

from django.db import transaction

from orders.models import Order, OrderStatus, Payment, PaymentStatus

from .events import event_record
from .outcomes import order_finish
from .payments import idempotency_key_for, payment_provider_status, provider_for
from .stock import stock_release

FAILED_REASON = "We could not complete this order. Nothing was charged."


def order_settle(*, order_id: str, attempt: int = 1) -> Order:
    """Settle a `settling` order with the provider; see the module docstring."""
    order = Order.objects.get(pk=order_id)
    if order.status != OrderStatus.SETTLING:
        return order
    payment = Payment.objects.filter(order=order).first()
    truth, payment_id = payment_provider_status(order=order, payment=payment)
    if truth == "captured" and order.stock_held:
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order_id)
            if locked.status != OrderStatus.SETTLING:
                return locked
            Payment.objects.filter(order=locked).update(
                provider_payment_id=payment_id, status=PaymentStatus.CAPTURED
            )
            event_record(
                order=locked,
                name="settled",
                attempt=attempt,
                detail={"provider": "captured", "outcome": "confirmed"},
            )
            return order_finish(order=locked, status=OrderStatus.CONFIRMED, attempt=attempt)
    refunded = False
    if truth in ("authorized", "captured"):
        provider_for(order).refund(
            payment_id=payment_id, idempotency_key=idempotency_key_for(order, "refund")
        )
        truth, refunded = "refunded", True
    released = stock_release(order=order)
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order_id)
        if locked.status != OrderStatus.SETTLING:
            return locked
        if payment is not None:
            Payment.objects.filter(order=locked).update(
                provider_payment_id=payment_id,
                status=PaymentStatus.DECLINED if truth in ("declined", "none") else truth,
            )
        event_record(
            order=locked,
            name="settled",
            attempt=attempt,
            detail={
                "provider": truth,
                "refunded": refunded,
                "stock_released": released,
                "outcome": "failed",
            },
        )
        return order_finish(
            order=locked,
            status=OrderStatus.FAILED,
            attempt=attempt,
            reason=FAILED_REASON,
            detail={"step": locked.failed_step, "refunded": refunded, "stock_released": released},
        )
