"""Builders for states that several test modules start from."""

from orders.models import Order, OrderEvent, OrderLine, OrderStatus, Payment, PaymentStatus, Product
from orders.services import order_fail


def order_failed(
    order: Order, *, step: str = "authorize_payment", attempts: int = 6
) -> Order | None:
    """What a step out of retries does to the order: a dead letter and status `failed`."""
    return order_fail(
        order_id=str(order.pk),
        step=step,
        task_name=f"orders.{step}",
        task_id="task-1",
        args=[str(order.pk)],
        kwargs={"throttled": 0},
        exception="TransientError: provider unreachable",
        traceback="Traceback (most recent call last): ...",
        attempts=attempts,
    )


# What the pipeline leaves on an order's timeline, step by step, for the states the tracking page
# and the admin are tested in. Written straight to the database: the page reads the database, and
# no worker or broker is needed to show it.
CONNECT_TIMEOUT = "TransientError: provider unreachable: ConnectTimeout"
_TIMELINES = {
    "accepted": ["accepted"],
    "payment_authorized": ["accepted", "payment_authorized"],
    "confirmed": [
        "accepted",
        ("step_retry", {"step": "authorize_payment", "error": CONNECT_TIMEOUT, "retry_in": 0.4}),
        "payment_authorized",
        "cart_verified",
        "stock_reserved",
        "payment_captured",
        "confirmed",
    ],
    "payment_declined": ["accepted", ("payment_declined", {"code": "card_declined"})],
    "cart_rejected": [
        "accepted",
        "payment_authorized",
        ("cart_check_failed", {"problems": ["PEN-1: only 3 in stock, 5 ordered."]}),
        ("payment_refunded", {"status": "refunded"}),
        "cart_rejected",
    ],
    # Ran out of retries capturing the payment, then settled (SPEC §2): the provider asked, the
    # authorization voided and the stock put back before the order was called failed (the
    # events orders/services/failures.py and settlement.py record).
    "failed": [
        "accepted",
        "payment_authorized",
        "cart_verified",
        "stock_reserved",
        *[("step_retry", {"step": "confirm_order", "error": CONNECT_TIMEOUT})] * 5,
        (
            "step_failed",
            {"step": "confirm_order", "task": "orders.confirm_order", "error": CONNECT_TIMEOUT},
        ),
        ("settling", {"from": "stock_reserved"}),
        (
            "settled",
            {"provider": "refunded", "refunded": True, "stock_released": True, "outcome": "failed"},
        ),
        ("failed", {"step": "confirm_order", "refunded": True, "stock_released": True}),
    ],
    # Ran out of retries before the provider ever saw the payment: nothing to settle.
    "failed_at_payment": [
        "accepted",
        *[("step_retry", {"step": "authorize_payment", "error": CONNECT_TIMEOUT})] * 5,
        (
            "step_failed",
            {
                "step": "authorize_payment",
                "task": "orders.authorize_payment",
                "error": CONNECT_TIMEOUT,
            },
        ),
        ("failed", {"step": "authorize_payment"}),
    ],
}
_PAYMENT = {
    "payment_authorized": PaymentStatus.AUTHORIZED,
    "confirmed": PaymentStatus.CAPTURED,
    "cart_rejected": PaymentStatus.REFUNDED,
    "failed": PaymentStatus.REFUNDED,
}
_FAILURE = {
    "payment_declined": ("", "", "Payment declined by the provider (card_declined)."),
    "cart_rejected": ("", "", "PEN-1: only 3 in stock, 5 ordered."),
    # What operators read; the lead's settlement now writes a customer sentence here, but the
    # page must not depend on that: an internal text is kept to prove it never shows.
    "failed": (
        "confirm_order",
        OrderStatus.STOCK_RESERVED,
        f"confirm_order failed after 6 attempt(s): {CONNECT_TIMEOUT}",
    ),
    "failed_at_payment": (
        "authorize_payment",
        OrderStatus.ACCEPTED,
        f"authorize_payment failed after 6 attempt(s): {CONNECT_TIMEOUT}",
    ),
}
ORDER_STATES = tuple(_TIMELINES)


def order_in_state(*, user, state: str, product: Product, quantity: int = 1) -> Order:
    """An order as the pipeline leaves it in `state` (a status, or `failed_at_payment`)."""
    status = OrderStatus.FAILED if state.startswith("failed") else OrderStatus(state)
    failed_step, failed_from_status, failure_reason = _FAILURE.get(state, ("", "", ""))
    total = product.price * quantity
    order = Order.objects.create(
        user=user,
        status=status,
        total=total,
        currency=product.currency,
        payment_token="tok_ok",
        correlation_id=f"corr-{state}",
        failure_reason=failure_reason,
        failed_step=failed_step,
        failed_from_status=failed_from_status,
    )
    OrderLine.objects.create(
        order=order,
        product=product,
        sku=product.sku,
        quantity=quantity,
        unit_price=product.price,
        check_ok=False if state == "cart_rejected" else None,
        check_reason=failure_reason if state == "cart_rejected" else "",
    )
    if state in _PAYMENT:
        Payment.objects.create(
            order=order,
            provider_payment_id=f"pay_{order.pk.hex[:16]}",
            amount=total,
            currency=product.currency,
            status=_PAYMENT[state],
        )
    retries = 0
    for entry in _TIMELINES[state]:
        name, detail = entry if isinstance(entry, tuple) else (entry, {})
        retries = retries + 1 if name == "step_retry" else 0
        OrderEvent.objects.create(
            order=order,
            name=name,
            correlation_id=order.correlation_id,
            attempt=retries or 1,
            detail=detail,
        )
    return order
