"""Webhook deliveries against a real HTTP receiver, driven through the services (no worker).

`db` never commits, so no delivery task is published; `deliver()` does what the task does.
"""

import json
import socket
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from notifications.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from notifications.services import (
    WebhookReplayNotAllowed,
    notification_send,
    webhook_body_encode,
    webhook_deliveries_sweep,
    webhook_delivery_replay,
    webhook_delivery_send,
    webhook_delivery_time_limit_record,
)
from orders.services import order_outcome_notification_kwargs
from tests.notifications.conftest import Answer, deliver, failed, make_endpoint, place
from tests.notifications.test_signing import documented, receiver_clock_ahead

pytestmark = pytest.mark.usefixtures("webhook_settings")


@pytest.fixture
def endpoint(customer, receiver):
    return make_endpoint(customer, receiver.url, events=["order.failed"])


@pytest.fixture
def delivery(catalog, customer, endpoint) -> WebhookDelivery:
    """The delivery of a failed order's outcome to `endpoint`, not sent yet."""
    order = failed(place(customer))
    notification_send(**order_outcome_notification_kwargs(order=order))
    return WebhookDelivery.objects.get(endpoint=endpoint)


def attempt_log(delivery: WebhookDelivery) -> list[tuple[int | None, str]]:
    return [(attempt.status_code, attempt.error) for attempt in delivery.attempts.all()]


def test_a_delivery_is_a_signed_json_post(delivery, endpoint, receiver):
    deliver(delivery)

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == "/hooks"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "Orderflow-Webhooks/1.0"
    assert request.headers["Host"] == f"127.0.0.1:{receiver.port}"
    # Standard Webhooks: the receiver's reference library verifies the delivery as received.
    assert request.headers["webhook-id"] == delivery.event_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.headers["webhook-signature"].startswith("v1,")
    assert Webhook(endpoint.secret).verify(request.body, request.headers) == request.json()
    assert documented("verified_event")(endpoint.secret, request.body, request.headers)
    assert not {"Orderflow-Signature", "Orderflow-Event-Id"} & set(request.headers)
    body = request.json()
    assert set(body) == {"id", "type", "created", "data"}
    assert body["id"] == delivery.event_id
    assert body["id"].startswith("evt_")
    assert body["type"] == "order.failed"
    assert abs(body["created"] - time.time()) < 60
    assert body["data"]["status"] == "failed"
    assert body["data"]["order_id"] == delivery.notification.data["order_id"]
    assert body["data"]["notification"]["title"] == "Your order could not be processed"
    assert request.body == webhook_body_encode(delivery.payload)
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 1
    assert delivery.delivered_at is not None
    assert delivery.next_attempt_at is None
    (attempt,) = delivery.attempts.all()
    assert attempt.status_code == 200
    assert attempt.error == ""
    assert attempt.response_body == '{"received": true}'
    assert attempt.duration_ms >= 0


@pytest.mark.parametrize(
    ("case", "tamper"),
    [
        (
            "tampered body",
            lambda body, headers: (body.replace(b'"failed"', b'"confirmed"'), headers),
        ),
        ("re-serialised body", lambda body, headers: (body.replace(b",", b", "), headers)),
        ("another id", lambda body, headers: (body, {**headers, "webhook-id": "evt_replayed"})),
        (
            "a restamped timestamp",
            lambda body, headers: (
                body,
                {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)},
            ),
        ),
    ],
)
def test_a_tampered_delivery_is_rejected_by_the_receivers_library(
    case, tamper, delivery, endpoint, receiver
):
    deliver(delivery)
    (request,) = receiver.requests
    body, headers = tamper(request.body, request.headers)

    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint.secret).verify(body, headers)
    assert documented("verified_event")(endpoint.secret, body, headers) is None


def test_a_delivery_presented_again_later_is_rejected(delivery, endpoint, receiver, monkeypatch):
    deliver(delivery)
    (request,) = receiver.requests
    assert Webhook(endpoint.secret).verify(request.body, request.headers)

    receiver_clock_ahead(monkeypatch, timedelta(minutes=6))  # captured, then replayed

    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(endpoint.secret).verify(request.body, request.headers)
    assert documented("verified_event")(endpoint.secret, request.body, request.headers) is None


def test_another_endpoints_secret_does_not_verify(delivery, customer, receiver):
    other = make_endpoint(customer, receiver.url)
    deliver(delivery)
    (request,) = receiver.requests

    with pytest.raises(WebhookVerificationError):
        Webhook(other.secret).verify(request.body, request.headers)


def test_an_endpoint_with_an_invalid_secret_fails_without_sending(delivery, endpoint, receiver):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret="whsec_not-base64_at-all")

    outcomes = deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert outcomes[-1].retry_in is None
    ((code, error),) = attempt_log(delivery)
    assert code is None
    assert "secret is invalid" in error
    assert receiver.requests == []


def test_5xx_is_retried_until_it_succeeds(delivery, receiver):
    receiver.script(500, 500, 200)

    outcomes = deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 3
    assert attempt_log(delivery) == [(500, ""), (500, ""), (200, "")]
    assert [outcome.status for outcome in outcomes if outcome.attempted] == [
        "pending",
        "pending",
        "succeeded",
    ]
    # The same event, byte for byte, under the same webhook-id (the receiver's idempotency
    # key) each time; each attempt stamped and signed afresh, and each verifies.
    assert len(receiver.requests) == 3
    assert len({request.body for request in receiver.requests}) == 1
    assert {request.headers["webhook-id"] for request in receiver.requests} == {delivery.event_id}
    for request in receiver.requests:
        assert Webhook(delivery.endpoint.secret).verify(request.body, request.headers)


def test_a_4xx_is_final_after_one_attempt(delivery, receiver):
    receiver.script(Answer(400, body=b'{"error": "unknown event"}'), 200)

    outcomes = deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert delivery.attempt_count == 1
    assert delivery.next_attempt_at is None
    assert delivery.delivered_at is None
    assert len(receiver.requests) == 1
    (attempt,) = delivery.attempts.all()
    assert attempt.status_code == 400
    assert attempt.response_body == '{"error": "unknown event"}'
    assert outcomes[-1].retry_in is None


def test_a_redirect_is_not_followed(delivery, receiver):
    receiver.script(Answer(302, headers={"Location": f"http://127.0.0.1:{receiver.port}/other"}))

    deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert attempt_log(delivery) == [(302, "")]
    assert [request.path for request in receiver.requests] == ["/hooks"]


def test_429_waits_for_retry_after(delivery, receiver, settings):
    settings.WEBHOOK_RETRY_BACKOFF_BASE = 0.01  # without Retry-After the retry would be at once
    receiver.script(Answer(429, headers={"Retry-After": "1"}), 200)

    outcomes = deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.SUCCEEDED
    assert attempt_log(delivery) == [(429, ""), (200, "")]
    assert outcomes[0].retry_in == pytest.approx(1.0, abs=0.01)
    first, second = receiver.requests
    assert second.received_at - first.received_at >= 1.0
    first_attempt, second_attempt = delivery.attempts.all()
    assert (second_attempt.attempted_at - first_attempt.attempted_at) >= timedelta(seconds=1)


def test_429_retry_after_as_an_http_date_is_honoured(delivery, receiver, settings):
    settings.WEBHOOK_RETRY_BACKOFF_BASE = 0.01
    when = timezone.now() + timedelta(seconds=2)
    receiver.script(
        Answer(429, headers={"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")})
    )

    outcome = webhook_delivery_send(delivery_id=delivery.pk)

    assert 0.5 < outcome.retry_in <= 2.0
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.PENDING
    assert delivery.next_attempt_at > timezone.now()


def test_a_timeout_is_an_attempt_with_an_error(delivery, receiver, settings):
    settings.WEBHOOK_READ_TIMEOUT = 0.3
    receiver.script(Answer(200, delay=1.0), 200)

    deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.SUCCEEDED
    timed_out, succeeded = delivery.attempts.all()
    assert timed_out.status_code is None
    assert "read timeout" in timed_out.error
    assert 300 <= timed_out.duration_ms < 1000
    assert succeeded.status_code == 200
    assert len(receiver.requests) == 2


def test_running_out_of_task_time_counts_as_a_timed_out_attempt(delivery, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2

    first = webhook_delivery_time_limit_record(delivery_id=delivery.pk)
    time.sleep(first.retry_in)
    second = webhook_delivery_time_limit_record(delivery_id=delivery.pk)

    assert first.status == "pending"
    assert first.retry_in is not None
    assert (second.status, second.retry_in) == ("failed", None)
    delivery.refresh_from_db()
    assert delivery.attempt_count == 2
    assert all("time limit" in error for _, error in attempt_log(delivery))


def test_out_of_attempts_the_delivery_fails(delivery, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    receiver.script(503, 503, 503, 200)

    outcomes = deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert delivery.attempt_count == 3
    assert delivery.next_attempt_at is None
    assert attempt_log(delivery) == [(503, ""), (503, ""), (503, "")]
    assert len(receiver.requests) == 3
    assert outcomes[-1].retry_in is None


def test_network_errors_are_retried_then_fail(catalog, customer, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    with socket.socket() as unused:  # a port with nothing listening: connection refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    endpoint = make_endpoint(customer, f"http://127.0.0.1:{port}/hooks")
    notification_send(**order_outcome_notification_kwargs(order=failed(place(customer))))
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)

    deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    errors = [attempt.error for attempt in delivery.attempts.all()]
    assert len(errors) == 2
    assert all(error.startswith("connection error") for error in errors)


def test_a_failed_delivery_replays_to_success(
    delivery, receiver, django_capture_on_commit_callbacks
):
    receiver.script(400)
    deliver(delivery)
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED

    with django_capture_on_commit_callbacks() as published:
        replayed = webhook_delivery_replay(delivery=delivery)

    assert replayed.status == WebhookDeliveryStatus.PENDING
    assert replayed.attempt_count == 0
    assert len(published) == 1  # the delivery task is enqueued again
    deliver(delivery)
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 1
    assert attempt_log(delivery) == [(400, ""), (200, "")]  # the first round stays logged
    assert len(receiver.requests) == 2
    # A replay is the same event to the receiver: the same webhook-id, signed afresh.
    assert [request.headers["webhook-id"] for request in receiver.requests] == [
        delivery.event_id
    ] * 2
    assert Webhook(delivery.endpoint.secret).verify(
        receiver.requests[1].body, receiver.requests[1].headers
    )


def test_only_a_failed_delivery_can_be_replayed(delivery, receiver):
    with pytest.raises(WebhookReplayNotAllowed, match="pending"):
        webhook_delivery_replay(delivery=delivery)
    deliver(delivery)
    delivery.refresh_from_db()

    with pytest.raises(WebhookReplayNotAllowed, match="succeeded"):
        webhook_delivery_replay(delivery=delivery)

    assert len(receiver.requests) == 1


def test_a_finished_delivery_is_not_sent_again(delivery, receiver):
    deliver(delivery)

    outcome = webhook_delivery_send(delivery_id=delivery.pk)  # a duplicate task message

    assert outcome.status == "succeeded"
    assert not outcome.attempted
    assert len(receiver.requests) == 1


def test_a_delivery_another_worker_is_sending_is_left_to_it(delivery, receiver):
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        lease_until=timezone.now() + timedelta(seconds=30)
    )

    outcome = webhook_delivery_send(delivery_id=delivery.pk)

    assert (outcome.status, outcome.retry_in, outcome.attempted) == ("pending", None, False)
    assert receiver.requests == []


def test_an_early_message_waits_until_the_delivery_is_due(delivery, receiver):
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() + timedelta(seconds=30)
    )

    outcome = webhook_delivery_send(delivery_id=delivery.pk)

    assert not outcome.attempted
    assert 25 < outcome.retry_in <= 30
    assert receiver.requests == []


def test_a_deleted_endpoint_ends_its_deliveries(delivery, endpoint, receiver):
    endpoint.delete()

    outcome = webhook_delivery_send(delivery_id=delivery.pk)

    assert outcome.status == "missing"
    assert outcome.retry_in is None
    assert receiver.requests == []


def test_a_disabled_endpoint_gets_nothing_more(delivery, endpoint, receiver):
    endpoint.is_active = False
    endpoint.save()

    deliver(delivery)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert attempt_log(delivery) == [(None, "The endpoint is disabled; not sent.")]
    assert receiver.requests == []


def test_deliveries_are_rate_limited_per_endpoint(catalog, customer, receiver, settings):
    settings.WEBHOOK_RATE_LIMIT = "2/s"
    settings.WEBHOOK_RATE_LIMIT_MAX_INLINE_WAIT = 0
    endpoint = make_endpoint(customer, receiver.url)
    other = make_endpoint(customer, receiver.url)
    for _ in range(3):
        notification_send(**order_outcome_notification_kwargs(order=failed(place(customer))))
    deliveries = list(WebhookDelivery.objects.filter(endpoint=endpoint).order_by("id"))
    assert len(deliveries) == 3

    outcomes = [webhook_delivery_send(delivery_id=delivery.pk) for delivery in deliveries]
    # The other endpoint has its own budget.
    other_outcome = webhook_delivery_send(
        delivery_id=WebhookDelivery.objects.filter(endpoint=other).first().pk
    )

    assert [outcome.attempted for outcome in outcomes] == [True, True, False]
    assert other_outcome.attempted
    waiting = outcomes[2]
    assert 0 < waiting.retry_in <= 1.1
    deliveries[2].refresh_from_db()
    assert deliveries[2].status == WebhookDeliveryStatus.PENDING
    assert deliveries[2].attempt_count == 0
    assert not deliveries[2].attempts.exists()
    assert len(receiver.requests) == 3

    deliver(deliveries[2])  # sleeps as told, then gets its slot

    deliveries[2].refresh_from_db()
    assert deliveries[2].status == WebhookDeliveryStatus.SUCCEEDED
    assert len(receiver.requests) == 4
    first, third = receiver.requests[0], receiver.requests[3]  # [2] went to the other endpoint
    assert third.received_at - first.received_at >= 1.0


def test_the_payload_is_stored_as_sent(delivery, receiver):
    deliver(delivery)

    assert json.loads(receiver.requests[0].body) == delivery.payload


def test_the_sweep_republishes_overdue_deliveries_only(
    delivery, broker_redis, settings, catalog, customer
):
    queue = f"{settings.BROKER_KEY_PREFIX}notifications"
    overdue_since = timezone.now() - timedelta(minutes=10)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=overdue_since)
    notification_send(**order_outcome_notification_kwargs(order=failed(place(customer))))
    in_flight = WebhookDelivery.objects.exclude(pk=delivery.pk).get()
    WebhookDelivery.objects.filter(pk=in_flight.pk).update(
        next_attempt_at=overdue_since,
        lease_until=timezone.now() + timedelta(seconds=30),  # a worker is sending it
    )

    published = webhook_deliveries_sweep(overdue_for=timedelta(minutes=5))

    assert published == 1
    messages = [json.loads(raw) for raw in broker_redis.lrange(queue, 0, -1)]
    assert [message["headers"]["task"] for message in messages] == ["notifications.deliver_webhook"]
    assert messages[0]["headers"]["argsrepr"] == f"[{delivery.pk}]"
