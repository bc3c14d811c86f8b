"""Live order updates over Redis pub/sub: every timeline event is announced after commit.

`?wait=N` subscribes before it reads the order, so no update can slip between the read and the
wait, and it holds no database connection while it waits.
"""

import json
import logging
import time

from django.db import connection, transaction

from project.redis_client import get_redis

from .models import TERMINAL_STATUSES, Order

logger = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 30


def order_channel(order_id) -> str:
    return f"orderflow:order:{order_id}"


def announce(*, order: Order, event: str) -> None:
    """Publish the order's new state once the transaction that wrote it commits."""
    message = json.dumps({"order_id": str(order.pk), "status": order.status, "event": event})
    channel = order_channel(order.pk)

    def publish() -> None:
        try:
            get_redis().publish(channel, message)
        except Exception as exc:  # live updates are a courtesy; the database is the truth
            logger.warning("order update not announced", extra={"error": repr(exc)})

    transaction.on_commit(publish)


def wait_until_terminal(*, order_id, timeout: float) -> bool:
    """Block up to `timeout` seconds for the order to reach a terminal status."""
    timeout = max(0.0, min(float(timeout), MAX_WAIT_SECONDS))
    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(order_channel(order_id))
        status = Order.objects.filter(pk=order_id).values_list("status", flat=True).first()
        if status is None or status in TERMINAL_STATUSES or timeout == 0:
            return status in TERMINAL_STATUSES
        if not connection.in_atomic_block:
            connection.close()  # give the connection back while we wait
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=remaining)
            if message and json.loads(message["data"])["status"] in TERMINAL_STATUSES:
                return True
        return False
    finally:
        pubsub.close()
