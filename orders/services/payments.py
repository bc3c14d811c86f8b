from django.db import transaction

from orders.models import Order, OrderStatus, Payment, PaymentStatus
from orders.provider import Declined, get_provider

from .events import event_record


def idempotency_key_for(order: Order, action: str) -> str:
    """One key per order and provider action: a retried or duplicated step cannot act twice."""
    return f"order-{order.pk}-{action}"


def payment_authorize(*, order_id: str, attempt: int = 1) -> Order:
    """Authorize the order's total with the provider (step 1).

    The provider call happens outside any transaction (no row lock held across the network);
    its idempotency key makes a concurrent duplicate harmless, and the status check under the
    row lock decides which run records the outcome.
    """
    order = Order.objects.get(pk=order_id)
    if order.status != OrderStatus.ACCEPTED:
        return order
    result = get_provider().authorize(
        amount=order.total,
        currency=order.currency,
        source=order.payment_token,
        reference=str(order.pk),
        idempotency_key=idempotency_key_for(order, "authorize"),
    )
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status != OrderStatus.ACCEPTED:
            return order
        if isinstance(result, Declined):
            order.status = OrderStatus.PAYMENT_DECLINED
            order.failure_reason = f"Payment declined by the provider ({result.code})."
            order.save(update_fields=["status", "failure_reason", "updated_at"])
            event_record(
                order=order, name="payment_declined", attempt=attempt, detail={"code": result.code}
            )
            return order
        Payment.objects.create(
            order=order,
            provider_payment_id=result.id,
            amount=order.total,
            currency=order.currency,
            status=PaymentStatus.AUTHORIZED,
        )
        order.status = OrderStatus.PAYMENT_AUTHORIZED
        order.save(update_fields=["status", "updated_at"])
        event_record(
            order=order, name="payment_authorized", attempt=attempt, detail={"payment": result.id}
        )
    return order
