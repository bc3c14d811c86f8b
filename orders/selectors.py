from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Prefetch, QuerySet
from django.http import Http404

from .models import Batch, Order, OrderEvent, Product


def product_list() -> QuerySet[Product]:
    return Product.objects.all()


def order_list_for_user(*, user: AbstractBaseUser, status: str | None = None) -> QuerySet[Order]:
    orders = Order.objects.all() if user.is_staff else Order.objects.filter(user=user)
    if status:
        orders = orders.filter(status=status)
    return orders.prefetch_related("lines")


def order_get_for_user(*, user: AbstractBaseUser, order_id) -> Order:
    """The order with its lines and timeline; 404 for anyone but its owner and staff."""
    try:
        return (
            order_list_for_user(user=user)
            .prefetch_related(
                Prefetch("events", queryset=OrderEvent.objects.order_by("created_at", "id"))
            )
            .get(pk=order_id)
        )
    except (Order.DoesNotExist, ValueError) as exc:
        raise Http404("No such order.") from exc


def batch_get_for_user(*, user: AbstractBaseUser, batch_id) -> Batch:
    batches = Batch.objects.all() if user.is_staff else Batch.objects.filter(user=user)
    try:
        return batches.get(pk=batch_id)
    except (Batch.DoesNotExist, ValueError) as exc:
        raise Http404("No such batch.") from exc


def batch_status_counts(*, batch: Batch) -> dict[str, int]:
    return {
        row["status"]: row["count"]
        for row in batch.orders.values("status").annotate(count=Count("pk")).order_by()
    }
