from django.db import transaction

from orders.models import Order, OrderLine, OrderStatus

from .events import event_record


def _line_problem(line: OrderLine) -> str:
    product = line.product
    if product.stock < line.quantity:
        return f"{line.sku}: only {product.stock} in stock, {line.quantity} ordered."
    if product.price != line.unit_price:
        return f"{line.sku}: price changed from {line.unit_price} to {product.price}."
    return ""


def cart_line_check(*, order_id: str, line_id: int) -> bool | None:
    """Check one line against the catalog (a chord member). Returns the verdict, None if moot."""
    if not Order.objects.filter(pk=order_id, status=OrderStatus.PAYMENT_AUTHORIZED).exists():
        return None
    line = OrderLine.objects.select_related("product").get(pk=line_id, order_id=order_id)
    problem = _line_problem(line)
    OrderLine.objects.filter(pk=line_id).update(check_ok=not problem, check_reason=problem)
    return not problem


def cart_verify(*, order_id: str, attempt: int = 1) -> Order:
    """Aggregate the line checks (the chord's callback): verified, or to be compensated."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status != OrderStatus.PAYMENT_AUTHORIZED:
            return order
        lines = list(order.lines.select_related("product"))
        for line in lines:
            if line.check_ok is None:  # a check that never ran (e.g. a replayed chord): run it
                line.check_reason = _line_problem(line)
                line.check_ok = not line.check_reason
                line.save(update_fields=["check_ok", "check_reason"])
        problems = [line.check_reason for line in lines if not line.check_ok]
        if problems:
            order.status = OrderStatus.COMPENSATING
            order.failure_reason = " ".join(problems)
            order.save(update_fields=["status", "failure_reason", "updated_at"])
            event_record(
                order=order,
                name="cart_check_failed",
                attempt=attempt,
                detail={"problems": problems},
            )
        else:
            order.status = OrderStatus.CART_VERIFIED
            order.save(update_fields=["status", "updated_at"])
            event_record(
                order=order, name="cart_verified", attempt=attempt, detail={"lines": len(lines)}
            )
    return order
