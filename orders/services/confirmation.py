from django.db import transaction
from django.db.models import F

from orders.models import Order, OrderStatus, PaymentStatus, Product
from orders.provider import get_provider

from .events import event_record
from .payments import idempotency_key_for


class _OutOfStock(Exception):
    def __init__(self, sku: str) -> None:
        self.sku = sku


def _reserve_stock(order: Order, attempt: int) -> None:
    """Take the order's quantities off the shelf, all or nothing."""
    try:
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order.pk)
            if locked.status != OrderStatus.CART_VERIFIED:
                return
            # Fixed product order: concurrent reservations never wait on each other in a cycle.
            for line in sorted(locked.lines.all(), key=lambda line: line.product_id):
                taken = Product.objects.filter(pk=line.product_id, stock__gte=line.quantity).update(
                    stock=F("stock") - line.quantity
                )
                if not taken:
                    raise _OutOfStock(line.sku)
            locked.status = OrderStatus.STOCK_RESERVED
            locked.save(update_fields=["status", "updated_at"])
            event_record(order=locked, name="stock_reserved", attempt=attempt)
    except _OutOfStock as exc:
        # Sold out between the check and now: nothing was taken, the payment must be voided.
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order.pk)
            if locked.status == OrderStatus.CART_VERIFIED:
                locked.status = OrderStatus.COMPENSATING
                locked.failure_reason = f"{exc.sku}: sold out before the order was confirmed."
                locked.save(update_fields=["status", "failure_reason", "updated_at"])
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
    status = getattr(get_provider(), action)(
        payment_id=order.payment.provider_payment_id,
        idempotency_key=idempotency_key_for(order, action),
    )
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.status != from_status:
            return
        locked.payment.status = payment_status
        locked.payment.save(update_fields=["status", "updated_at"])
        locked.status = to_status
        locked.save(update_fields=["status", "updated_at"])
        event_record(
            order=locked,
            name=f"payment_{payment_status}",
            attempt=attempt,
            detail={"status": status},
        )
        event_record(order=locked, name=str(to_status), attempt=attempt)


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
