"""The orders app's worker hooks, connected when the app is ready (orders/apps.py)."""

from celery.signals import task_prerun, worker_ready

from orders import services, workflow
from orders.services.outbox import OUTBOX_HEADER
from project import leases

# Tasks whose messages hold an order's next step (their first argument is the order id).
ORDER_TASKS = frozenset(
    {
        workflow.START_PIPELINE,
        workflow.AUTHORIZE_PAYMENT,
        workflow.CHECK_CART_LINE,
        workflow.VERIFY_CART,
        workflow.CONFIRM_ORDER,
        workflow.SETTLE_ORDER,
    }
)


def _order_id(request) -> str | None:
    kwargs = request.kwargs or {}
    order_id = kwargs.get("order_id") or (request.args[0] if request.args else None)
    return str(order_id) if order_id else None


# What this worker held at its last beat (the heartbeat is one thread per worker process).
_held_at_last_beat: set[str] = set()


def renew_order_leases(requests, hostname: str) -> None:
    """The heartbeat (project/leases.py): every order whose message this worker holds is alive."""
    order_ids = {
        order_id
        for request in requests
        if request.task_name in ORDER_TASKS and (order_id := _order_id(request))
    }
    services.order_leases_renew(
        order_ids=order_ids, holder=hostname, released=_held_at_last_beat - order_ids
    )
    _held_at_last_beat.clear()
    _held_at_last_beat.update(order_ids)


leases.register_renewer(renew_order_leases)


@worker_ready.connect
def relay_outbox_on_worker_start(sender, **kwargs) -> None:
    """A worker that starts after an outage publishes what the API could not."""
    sender.app.send_task(workflow.RELAY_OUTBOX)


@task_prerun.connect
def mark_outbox_message_delivered(sender=None, task=None, **kwargs) -> None:
    """The message of an outbox row reached a worker: the relay need not send it again."""
    message_id = getattr(task.request, OUTBOX_HEADER, None)
    if message_id is not None and not task.request.is_eager:
        services.outbox_mark_delivered(message_id=int(message_id))
