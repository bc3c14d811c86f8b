from django.db import transaction

from orders.models import Order, OrderStatus, PaymentStatus

from .events import event_record
from .leases import lease_handoff
from .outcomes import order_finish
from .payments import idempotency_key_for, provider_for
from .stock import OutOfStock, stock_take


def _reserve_stock(order: Order, attempt: int) -> None:
    try:
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order.pk)
            if locked.status != OrderStatus.CART_VERIFIED:
                return
            stock_take(order=locked)
            locked.status = OrderStatus.STOCK_RESERVED
            locked.save(update_fields=["status", "updated_at", *lease_handoff(locked)])
            event_record(order=locked, name="stock_reserved", attempt=attempt)
    except OutOfStock as exc:
        # Sold out between the check and now: nothing was taken, the payment must be voided.
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order.pk)
            if locked.status == OrderStatus.CART_VERIFIED:
                locked.status = OrderStatus.COMPENSATING
                locked.failure_reason = f"{exc.sku}: sold out before the order was confirmed."
                locked.save(
                    update_fields=["status", "failure_reason", "updated_at", *lease_handoff(locked)]
                )
                event_record(
                    order=locked,
                    name="stock_reservation_failed",
                    attempt=attempt,
                    detail={"sku": exc.sku},
                )


# From the status an order waits in: the provider action that settles it, then the payment's
# and the order's final statuses.
SETTLEMENTS = {
    OrderStatus.STOCK_RESERVED: ("capture", PaymentStatus.CAPTURED, OrderStatus.CONFIRMED),
    OrderStatus.COMPENSATING: ("refund", PaymentStatus.REFUNDED, OrderStatus.CART_REJECTED),
}


def _settle(order: Order, attempt: int) -> None:
    """Capture or refund at the provider, then record it once under the row lock.

    The provider call is idempotent by key, so a second run after a crash repeats the call
    harmlessly and finds the status already moved on.
    """
    from_status = order.status
    action, payment_status, to_status = SETTLEMENTS[from_status]
    status = getattr(provider_for(order), action)(
        payment_id=order.payment.provider_payment_id,
        idempotency_key=idempotency_key_for(order, action),
    )
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.status != from_status:
            return  # a twin or settlement recorded it; settlement asks the provider what happened
        locked.payment.status = payment_status
        locked.payment.save(update_fields=["status", "updated_at"])
        event_record(
            order=locked,
            name=f"payment_{payment_status}",
            attempt=attempt,
            detail={"status": status},
        )
        order_finish(
            order=locked,
            status=to_status,
            attempt=attempt,
            reason=locked.failure_reason if to_status == OrderStatus.CART_REJECTED else "",
        )


def order_confirm(*, order_id: str, attempt: int = 1) -> Order:
    """Settle the order (step 3): reserve stock and capture, or void/refund a rejected cart.

    Each phase moves the status forward under the row lock and is skipped once done, so a
    retried or duplicated run resumes where the last one stopped; provider calls carry
    per-action idempotency keys.
    """
    order = Order.objects.get(pk=order_id)
    if order.status == OrderStatus.CART_VERIFIED:
        _reserve_stock(order, attempt)
        order.refresh_from_db()
    if order.status in SETTLEMENTS:
        _settle(order, attempt)
    order.refresh_from_db()
    return order
