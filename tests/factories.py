"""Builders for states that several test modules start from."""

from orders.models import Order
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
