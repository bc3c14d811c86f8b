"""Leases: who holds an unfinished order's next step, and until when.

A worker renews the lease of every order whose message it holds (queued in its memory, waiting
on an ETA for a rate-limit slot, or running) from a heartbeat thread (project/leases.py), as
Temporal's activities heartbeat. A step that moves an order on hands it over: the holder is
cleared and the lease runs for one more period while the next message waits to be received. An
expired lease is lost work (orders/services/recovery.py), found within a lease period instead of
the broker's visibility timeout.
"""

from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from orders import workflow
from orders.models import Order


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.ORDER_LEASE_SECONDS)


def lease_handoff(order: Order) -> list[str]:
    """Mark the order handed to its next step's queue; returns the fields to save."""
    order.lease_holder = ""
    order.lease_until = timezone.now() + lease_duration()
    return ["lease_holder", "lease_until"]


def order_leases_renew(
    *, order_ids: Iterable[str], holder: str, released: Iterable[str] = ()
) -> int:
    """The heartbeat: these orders' messages are held by `holder`, alive now; the `released`
    ones it held at its last beat and holds no more (a step that ended without moving the order
    on: a stale copy, a line check that did not complete the cart, a retry sent back to the
    broker) are handed back to their queue, so that the holder's next silence is not read as
    its death."""
    now = timezone.now()
    holder = holder[:200]
    ids = list(dict.fromkeys(order_ids))
    gone = [order_id for order_id in dict.fromkeys(released) if order_id not in set(ids)]
    if gone:
        Order.objects.filter(pk__in=gone, lease_holder=holder).update(
            lease_holder="", lease_until=now + lease_duration()
        )
    if not ids:
        return 0
    return Order.objects.filter(pk__in=ids, status__in=workflow.ACTIVE_STATUSES).update(
        lease_until=now + lease_duration(), lease_holder=holder
    )
