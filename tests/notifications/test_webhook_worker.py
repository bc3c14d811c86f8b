"""The task path: a real Celery worker on the real Redis broker runs the pipeline, the notify task
and the webhook delivery task (with a retry it schedules itself) against a real HTTP receiver."""

import json
import time

import pytest
from standardwebhooks import Webhook

from notifications.models import WebhookDelivery, WebhookDeliveryStatus
from notifications.services import webhook_endpoint_create
from notifications.tasks import notify
from orders.models import Order, OrderStatus
from orders.services import order_create, order_outcome_notification_kwargs
from tests.conftest import wait_for

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


def test_an_order_outcome_reaches_the_webhook_through_the_worker(
    celery_worker, catalog, customer, receiver, webhook_settings
):
    endpoint = webhook_endpoint_create(user=customer, url=receiver.url, events=["order.confirmed"])
    receiver.script(503)  # the first attempt fails; the delivery task schedules the next one

    order, _ = order_create(
        user=customer, lines=[{"sku": "BOOK-1", "quantity": 1}], payment_token="tok_ok"
    )

    delivery = wait_for(
        lambda: WebhookDelivery.objects.filter(
            endpoint=endpoint, status=WebhookDeliveryStatus.SUCCEEDED
        ).first(),
        timeout=40,
    )
    assert Order.objects.get(pk=order.pk).status == OrderStatus.CONFIRMED
    assert [attempt.status_code for attempt in delivery.attempts.all()] == [503, 200]
    assert len(receiver.requests) == 2
    request = receiver.requests[-1]
    event = Webhook(endpoint.secret).verify(request.body, request.headers)
    assert event == json.loads(request.body)
    assert event["type"] == "order.confirmed"
    assert event["data"]["order_id"] == str(order.pk)
    # The retry carried the first attempt's webhook-id: the receiver's idempotency key.
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event["id"]}
    assert event["id"] == delivery.event_id

    # The notify task delivered once more (a redelivered message): nothing new goes out.
    order.refresh_from_db()
    notify.delay(**order_outcome_notification_kwargs(order=order)).get(timeout=20)
    time.sleep(0.5)
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 1
    assert len(receiver.requests) == 2
