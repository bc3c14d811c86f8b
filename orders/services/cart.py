from django.db import transaction

from orders.models import Order, OrderLine, OrderStatus

from .events import event_record
from .leases import lease_handoff


def _line_problem(line: OrderLine) -> str:
    product = line.product
    if product.stock < line.quantity:
        return f"{line.sku}: only {product.stock} in stock, {line.quantity} ordered."
    if product.price != line.unit_price:
        return f"{line.sku}: price changed from {line.unit_price} to {product.price}."
    return ""


def cart_line_check(*, order_id: str, line_id: int) -> bool:
    """Check one line against the catalog (the cart check fans out one per line), then join.

    The join is at the database, not in a result backend's chord counter: whichever check
    finds every line checked moves the order on, once, under the row lock. A duplicated or
    re-run check finds the order moved on and does nothing; a lost one is found by recovery.
    Returns whether this call moved the order on (the caller then sends the confirmation).
    """
    if not Order.objects.filter(pk=order_id, status=OrderStatus.PAYMENT_AUTHORIZED).exists():
        return False
    line = OrderLine.objects.select_related("product").get(pk=line_id, order_id=order_id)
    problem = _line_problem(line)
    OrderLine.objects.filter(pk=line_id).update(check_ok=not problem, check_reason=problem)
    if OrderLine.objects.filter(order_id=order_id, check_ok__isnull=True).exists():
        return False
    return _cart_aggregate(order_id=order_id, attempt=1, run_missing=False)


def cart_verify(*, order_id: str, attempt: int = 1) -> Order:
    """Check every line not checked yet and aggregate (recovery and replay enter the cart step
    here, with no fan-out)."""
    _cart_aggregate(order_id=order_id, attempt=attempt, run_missing=True)
    return Order.objects.get(pk=order_id)


def _cart_aggregate(*, order_id: str, attempt: int, run_missing: bool) -> bool:
    """Verified, or to be compensated; returns whether this call moved the order on."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status != OrderStatus.PAYMENT_AUTHORIZED:
            return False
        lines = list(order.lines.select_related("product"))
        for line in lines:
            if line.check_ok is None:
                if not run_missing:
                    return False
                line.check_reason = _line_problem(line)
                line.check_ok = not line.check_reason
                line.save(update_fields=["check_ok", "check_reason"])
        problems = [line.check_reason for line in lines if not line.check_ok]
        fields = ["status", "updated_at", *lease_handoff(order)]
        if problems:
            order.status = OrderStatus.COMPENSATING
            order.failure_reason = " ".join(problems)
            order.save(update_fields=[*fields, "failure_reason"])
            event_record(
                order=order,
                name="cart_check_failed",
                attempt=attempt,
                detail={"problems": problems},
            )
        else:
            order.status = OrderStatus.CART_VERIFIED
            order.save(update_fields=fields)
            event_record(
                order=order, name="cart_verified", attempt=attempt, detail={"lines": len(lines)}
            )
    return True
