from celery.signals import worker_ready


@worker_ready.connect
def relay_outbox_on_worker_start(sender, **kwargs) -> None:
    """A worker that starts after an outage publishes what the API could not."""
    sender.app.send_task("orders.relay_outbox")
