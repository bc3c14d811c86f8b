"""notification_send against the database and Django's locmem email backend (`mail.outbox`)."""

import uuid

import pytest
from django.core import mail
from standardwebhooks import Webhook

from notifications import kinds
from notifications.models import Notification, WebhookDelivery, WebhookDeliveryStatus
from notifications.services import notification_send, webhook_event_id
from orders.models import Order, OrderStatus
from orders.services import (
    order_outcome_notification_kwargs,
    payment_authorize,
    replay_order,
)
from tests.notifications.conftest import deliver, failed, make_endpoint, place


def send_outcome(order: Order) -> Notification | None:
    """What the pipeline's notify step does for the order's outcome."""
    return notification_send(**order_outcome_notification_kwargs(order=order))


def test_outcome_of_a_terminal_order_is_notified_and_emailed_once(catalog, customer):
    order = failed(place(customer))

    notification = send_outcome(order)

    assert notification is not None
    assert Notification.objects.count() == 1
    notification.refresh_from_db()
    assert notification.user == customer
    assert notification.kind == "order.failed"
    assert notification.title == "Your order could not be processed"
    assert notification.data == {"order_id": str(order.pk), "status": "failed"}
    assert str(order.pk) in notification.body
    # The customer reads what happened in the tracking page's words (orders/presentation.py),
    # never the internal failure.
    assert "Nothing was charged." in notification.body
    assert notification.emailed_at is not None
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@example.com"]
    assert mail.outbox[0].subject == "Your order could not be processed"
    assert str(order.pk) in mail.outbox[0].body
    assert "Nothing was charged." in mail.outbox[0].body
    for internal in ("authorize_payment", "TransientError", "provider unreachable", "attempt(s)"):
        assert internal not in notification.body
        assert internal not in mail.outbox[0].body

    again = send_outcome(order)

    assert again.pk == notification.pk
    assert Notification.objects.count() == 1
    assert len(mail.outbox) == 1


def test_declined_payment_is_notified(sandbox, settings, catalog, customer):
    settings.PAYMENT_PROVIDER_API_KEY = f"sk_test_{uuid.uuid4().hex}"  # a fresh provider budget
    order = payment_authorize(order_id=str(place(customer, card="tok_declined").pk))
    assert order.status == OrderStatus.PAYMENT_DECLINED

    notification = send_outcome(order)

    assert notification.kind == "order.payment_declined"
    assert [message.subject for message in mail.outbox] == ["Your payment was declined"]


def test_each_replay_round_gets_its_own_outcome_notification(catalog, customer):
    order = failed(place(customer))
    send_outcome(order)
    replay_order(order_id=str(order.pk))
    order = failed(Order.objects.get(pk=order.pk))

    send_outcome(order)

    assert Notification.objects.filter(user=customer, kind="order.failed").count() == 2
    assert len(mail.outbox) == 2


def test_a_non_terminal_order_is_not_notified(catalog, customer):
    order = place(customer)

    assert send_outcome(order) is None

    assert not Notification.objects.exists()
    assert mail.outbox == []


def test_an_order_is_not_notified_to_another_user(catalog, customer, other_customer):
    order = failed(place(customer))

    sent = notification_send(
        kind="order.outcome",
        user_id=other_customer.pk,
        context={"order_id": str(order.pk), "round": 0},
    )

    assert sent is None
    assert not Notification.objects.exists()
    assert mail.outbox == []


def test_a_user_without_email_gets_the_in_app_notification_only(catalog, staff):
    assert staff.email == ""
    order = failed(place(staff))

    notification = send_outcome(order)
    send_outcome(order)

    assert Notification.objects.filter(user=staff).count() == 1
    notification.refresh_from_db()
    assert notification.emailed_at is None
    assert mail.outbox == []


def test_an_unknown_kind_is_a_value_error(catalog, customer):
    order = failed(place(customer))

    with pytest.raises(ValueError, match=r"order\.nonsense"):
        notification_send(
            kind="order.nonsense", user_id=customer.pk, context={"order_id": str(order.pk)}
        )

    assert not Notification.objects.exists()
    assert mail.outbox == []


# --- every channel ------------------------------------------------------------------------------


def test_a_subscribed_kind_goes_to_every_channel(
    catalog, customer, receiver, webhook_settings, django_capture_on_commit_callbacks
):
    endpoint = make_endpoint(customer, receiver.url, events=["order.confirmed", "order.failed"])
    catch_all = make_endpoint(customer, receiver.url, events=["*"])
    order = failed(place(customer))

    with django_capture_on_commit_callbacks() as published:
        notification = send_outcome(order)

    # In-app and email.
    assert Notification.objects.filter(user=customer, kind="order.failed").count() == 1
    assert [message.to for message in mail.outbox] == [["alice@example.com"]]
    # Webhooks: one delivery per subscribed endpoint, each with its delivery task enqueued.
    deliveries = WebhookDelivery.objects.filter(notification=notification).order_by("id")
    assert {delivery.endpoint_id for delivery in deliveries} == {endpoint.pk, catch_all.pk}
    assert len(deliveries) == 2
    assert len(published) == 2
    event_id = webhook_event_id(notification=notification)
    for delivery in deliveries:
        assert delivery.status == WebhookDeliveryStatus.PENDING
        assert delivery.event_kind == "order.failed"
        assert delivery.event_id == event_id  # one event, the same id for every endpoint
        deliver(delivery)
    requests = {request.headers["webhook-id"] for request in receiver.requests}
    assert requests == {event_id}
    assert len(receiver.requests) == 2
    for request, delivery in zip(receiver.requests, deliveries, strict=True):
        # Each endpoint has its own secret: each delivery verifies with its endpoint's.
        assert Webhook(delivery.endpoint.secret).verify(request.body, request.headers)
        assert request.json()["type"] == "order.failed"


def test_no_webhook_for_an_unsubscribed_kind_an_inactive_endpoint_or_another_user(
    catalog, customer, other_customer, receiver, webhook_settings
):
    make_endpoint(customer, receiver.url, events=["order.confirmed"])
    make_endpoint(customer, receiver.url, events=["*"], is_active=False)
    make_endpoint(other_customer, receiver.url, events=["*"])
    order = failed(place(customer))

    notification = send_outcome(order)

    assert notification is not None
    assert len(mail.outbox) == 1  # the other channels still deliver
    assert not WebhookDelivery.objects.exists()


def test_a_second_run_of_the_task_creates_no_second_delivery(
    catalog, customer, receiver, webhook_settings, django_capture_on_commit_callbacks
):
    make_endpoint(customer, receiver.url, events=["order.failed"])
    order = failed(place(customer))

    with django_capture_on_commit_callbacks() as first_run:
        send_outcome(order)
    with django_capture_on_commit_callbacks() as second_run:
        send_outcome(order)

    assert WebhookDelivery.objects.count() == 1
    assert (len(first_run), len(second_run)) == (1, 0)


def test_an_endpoint_created_after_the_event_does_not_receive_it(
    catalog, customer, receiver, webhook_settings
):
    order = failed(place(customer))
    send_outcome(order)
    make_endpoint(customer, receiver.url, events=["*"])

    send_outcome(order)  # the notify task delivered again

    assert not WebhookDelivery.objects.exists()


# --- email templates ----------------------------------------------------------------------------


def test_the_email_uses_the_kinds_template(catalog, customer):
    order = failed(place(customer))

    notification = send_outcome(order)

    (email,) = mail.outbox
    assert email.body.startswith("Hello alice,")
    assert "We could not complete your order." in email.body  # order.failed.txt
    assert notification.body in email.body


@pytest.fixture
def plain_kind():
    """A kind with no template of its own, rendering text that HTML escaping would change."""
    counter = iter(range(1000))

    def render(user_id: int, context: dict) -> kinds.Message:
        return kinds.Message(
            kind="test.plain",
            title="Tom & Jerry's <news>",
            body="Fish & chips aren't <free>.",
            dedupe_key=f"test.plain:{user_id}:{next(counter)}",
        )

    kinds.register("test.plain", render)
    yield "test.plain"
    kinds._renderers.pop("test.plain", None)


def test_a_kind_without_a_template_uses_the_default_unescaped(customer, plain_kind):
    notification_send(kind=plain_kind, user_id=customer.pk, context={})

    (email,) = mail.outbox
    assert email.subject == "Tom & Jerry's <news>"
    assert email.body == "Hello alice,\n\nFish & chips aren't <free>.\n\n--\nOrderflow\n"
