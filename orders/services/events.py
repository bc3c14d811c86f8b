import logging

from orders import live
from orders.models import Order, OrderEvent

logger = logging.getLogger("orders.timeline")


def event_record(
    *,
    order: Order,
    name: str,
    attempt: int = 1,
    detail: dict | None = None,
    announce: bool = True,
) -> OrderEvent:
    """Append an event to the order's timeline (and the log, with the correlation id).

    `announce` publishes it to the order's live channel after commit (orders/live.py); an
    order's first event skips that, since nobody can be subscribed to an order not yet created.
    """
    event = OrderEvent.objects.create(
        order=order,
        name=name,
        correlation_id=order.correlation_id,
        attempt=attempt,
        detail=detail or {},
    )
    if announce:
        live.announce(order=order, event=name, entry=event)
    logger.info(
        "order event %s",
        name,
        extra={
            "order_id": str(order.pk),
            "correlation_id": order.correlation_id,
            "attempt": attempt,
            "detail": detail or {},
        },
    )
    return event
