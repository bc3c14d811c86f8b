"""SPEC §2's invariant, asserted by every test that ends an order: an order is settled before it
is called terminal, checked against what the provider really holds (the sandbox's own records),
not against our rows alone."""

from orders.models import Order, OrderStatus, PaymentStatus, Product


def provider_payments_for(sandbox, order: Order) -> list[dict]:
    return [p for p in sandbox.payments() if str(p["reference"]) == str(order.pk)]


def assert_settled(order: Order, sandbox) -> None:
    order.refresh_from_db()
    assert order.is_terminal, f"{order.pk} is {order.status}, not terminal"
    held = provider_payments_for(sandbox, order)
    captured = [p for p in held if p["status"] == "captured"]
    authorized = [p for p in held if p["status"] == "authorized"]
    assert not authorized, f"{order.status} order {order.pk} left a hold: {authorized}"
    if order.status == OrderStatus.CONFIRMED:
        assert len(captured) == 1, f"confirmed order {order.pk} captured {len(captured)} times"
        assert order.payment.status == PaymentStatus.CAPTURED
        assert order.payment.provider_payment_id == captured[0]["id"]
        assert order.stock_held
    else:
        assert not captured, f"{order.status} order {order.pk} has money taken: {captured}"
        assert not order.stock_held, f"{order.status} order {order.pk} still holds stock"


def assert_stock_consistent(initial: dict[str, int]) -> None:
    """Stock on the shelf = initial - what confirmed orders (and only they) hold."""
    for sku, start in initial.items():
        product = Product.objects.get(sku=sku)
        held = sum(
            line.quantity
            for order in Order.objects.filter(lines__sku=sku, stock_held=True).distinct()
            for line in order.lines.filter(sku=sku)
        )
        assert product.stock == start - held, f"{sku}: {product.stock} != {start} - {held}"
        assert product.stock >= 0
