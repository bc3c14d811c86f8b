"""Stock moves only by deltas under conditional updates: take, release, adjust."""

from django.db import transaction
from django.db.models import F

from orders.models import Order, Product


class OutOfStock(Exception):
    def __init__(self, sku: str) -> None:
        super().__init__(sku)
        self.sku = sku


def stock_take(*, order: Order) -> None:
    """Take the locked order's quantities off the shelf, all or nothing (caller's transaction)."""
    # Fixed product order: concurrent reservations never wait on each other in a cycle.
    for line in sorted(order.lines.all(), key=lambda line: line.product_id):
        taken = Product.objects.filter(pk=line.product_id, stock__gte=line.quantity).update(
            stock=F("stock") - line.quantity
        )
        if not taken:
            raise OutOfStock(line.sku)
    Order.objects.filter(pk=order.pk).update(stock_held=True)
    order.stock_held = True


def stock_release(*, order: Order) -> bool:
    """Put the order's quantities back, once (the flag is cleared by a conditional update)."""
    with transaction.atomic():
        if not Order.objects.filter(pk=order.pk, stock_held=True).update(stock_held=False):
            return False
        for line in sorted(order.lines.all(), key=lambda line: line.product_id):
            Product.objects.filter(pk=line.product_id).update(stock=F("stock") + line.quantity)
    order.stock_held = False
    return True


def product_stock_adjust(*, product_id: int, delta: int) -> Product:
    """Staff add or remove stock by a delta; never below zero. Raises ValueError if it would."""
    with transaction.atomic():
        query = Product.objects.filter(pk=product_id)
        if delta < 0:
            query = query.filter(stock__gte=-delta)
        if not query.update(stock=F("stock") + delta):
            raise ValueError(f"cannot remove {-delta}: not that many in stock")
    return Product.objects.get(pk=product_id)
