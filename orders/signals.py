from celery.signals import task_prerun, worker_ready

from orders.services.outbox import OUTBOX_HEADER, outbox_mark_delivered


@worker_ready.connect
def relay_outbox_on_worker_start(sender, **kwargs) -> None:
    """A worker that starts after an outage publishes what the API could not."""
    sender.app.send_task("orders.relay_outbox")


@task_prerun.connect
def mark_outbox_message_delivered(sender=None, task=None, **kwargs) -> None:
    """The message of an outbox row reached a worker: the relay need not send it again."""
    message_id = getattr(task.request, OUTBOX_HEADER, None)
    if message_id is not None and not task.request.is_eager:
        outbox_mark_delivered(message_id=int(message_id))
