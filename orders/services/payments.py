from django.db import transaction

from orders import workflow
from orders.models import Order, OrderStatus, Payment, PaymentStatus
from orders.provider import Declined, PaymentProvider, TransientError, get_provider

from .events import event_record
from .leases import lease_handoff
from .outcomes import order_finish


def provider_for(order: Order) -> PaymentProvider:
    """The provider client, drawing on the order's customer's share of the budget."""
    return get_provider(customer=str(order.user_id), lane=workflow.lane_of(order))


def idempotency_key_for(order: Order, action: str) -> str:
    """One key per order, replay round and provider action: a retried or duplicated step cannot
    act twice, and a replay after settlement asks afresh."""
    if order.replays:
        return f"order-{order.pk}-r{order.replays}-{action}"
    return f"order-{order.pk}-{action}"


def payment_authorize(*, order_id: str, attempt: int = 1) -> Order:
    """Authorize the order's total with the provider (step 1).

    A pending payment is written before the call and kept unless the call certainly did not
    reach the provider: if its answer is lost (or the worker dies during the call), settlement
    knows an authorization may exist and asks. The call happens outside any transaction (no row lock
    across the network); the idempotency key makes a concurrent duplicate harmless, and the
    status check under the row lock decides which run records the outcome.
    """
    order = Order.objects.get(pk=order_id)
    if order.status != OrderStatus.ACCEPTED:
        return order
    Payment.objects.get_or_create(
        order=order,
        defaults={
            "amount": order.total,
            "currency": order.currency,
            "status": PaymentStatus.PENDING,
        },
    )
    try:
        result = provider_for(order).authorize(
            amount=order.total,
            currency=order.currency,
            source=order.payment_token,
            reference=str(order.pk),
            idempotency_key=idempotency_key_for(order, "authorize"),
        )
    except TransientError as exc:
        if not exc.maybe_acted:  # certainly nothing at the provider: nothing to ask about later
            Payment.objects.filter(order=order, status=PaymentStatus.PENDING).delete()
        raise
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status != OrderStatus.ACCEPTED:
            return order
        if isinstance(result, Declined):
            Payment.objects.filter(order=order).update(status=PaymentStatus.DECLINED)
            return order_finish(
                order=order,
                status=OrderStatus.PAYMENT_DECLINED,
                attempt=attempt,
                reason=f"The payment was declined ({result.code}); nothing was charged.",
                detail={"code": result.code},
            )
        Payment.objects.update_or_create(
            order=order,
            defaults={
                "provider_payment_id": result.id,
                "amount": order.total,
                "currency": order.currency,
                "status": PaymentStatus.AUTHORIZED,
            },
        )
        order.status = OrderStatus.PAYMENT_AUTHORIZED
        order.save(update_fields=["status", "updated_at", *lease_handoff(order)])
        event_record(
            order=order, name="payment_authorized", attempt=attempt, detail={"payment": result.id}
        )
    return order


def payment_provider_status(*, order: Order, payment: Payment | None) -> tuple[str, str | None]:
    """What the provider holds for the order's payment now: (status, payment id), the status
    one of "none", "declined", "authorized", "captured", "refunded". Asked, never assumed from our
    rows (settlement and reconciliation both start here).

    An authorization whose answer was lost has no id on our side: its own request is repeated
    with its idempotency key, and the provider answers with its first outcome, acting no more.
    """
    if payment is None:
        return "none", None
    provider = provider_for(order)
    if payment.status == PaymentStatus.PENDING or not payment.provider_payment_id:
        result = provider.authorize(
            amount=payment.amount,
            currency=payment.currency,
            source=order.payment_token,
            reference=str(order.pk),
            idempotency_key=idempotency_key_for(order, "authorize"),
        )
        if isinstance(result, Declined):
            return "declined", None
        return result.status, result.id
    return provider.retrieve(payment_id=payment.provider_payment_id).status, (
        payment.provider_payment_id
    )
