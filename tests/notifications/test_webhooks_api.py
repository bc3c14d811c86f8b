"""/api/webhooks/ through DRF's APIClient: status codes, bodies, and the rows behind them."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from notifications.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from notifications.services import (
    WebhookEndpointLimitReached,
    notification_send,
    webhook_endpoint_create,
)
from orders.services import order_outcome_notification_kwargs
from tests.conftest import client_for
from tests.notifications.conftest import deliver, failed, make_endpoint, place

WEBHOOKS_URL = "/api/webhooks/"
DELIVERIES_URL = "/api/webhooks/deliveries/"


def create(client: APIClient, body: dict):
    return client.post(WEBHOOKS_URL, body, format="json")


def test_create_shows_the_secret_once(api, customer, receiver, webhook_settings):
    response = create(api, {"url": receiver.url, "events": ["order.confirmed", "order.failed"]})

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "url", "events", "is_active", "created_at", "secret"}
    assert body["url"] == receiver.url
    assert body["events"] == ["order.confirmed", "order.failed"]
    assert body["is_active"] is True
    assert body["secret"].startswith("whsec_")
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert endpoint.user == customer
    assert endpoint.secret == body["secret"]

    listed = api.get(WEBHOOKS_URL).json()

    assert listed["count"] == 1
    assert set(listed["results"][0]) == {"id", "url", "events", "is_active", "created_at"}
    assert body["secret"] not in str(listed)


def test_the_list_holds_only_my_endpoints(api, customer, other_customer, receiver):
    mine = make_endpoint(customer, receiver.url)
    make_endpoint(other_customer, receiver.url)

    response = api.get(WEBHOOKS_URL)

    assert response.status_code == 200
    assert [endpoint["id"] for endpoint in response.json()["results"]] == [mine.pk]


def test_delete_my_endpoint(api, customer, receiver):
    endpoint = make_endpoint(customer, receiver.url)

    response = api.delete(f"{WEBHOOKS_URL}{endpoint.pk}/")

    assert response.status_code == 204
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_another_users_endpoint_is_404_on_delete(api, other_customer, receiver):
    theirs = make_endpoint(other_customer, receiver.url)

    response = api.delete(f"{WEBHOOKS_URL}{theirs.pk}/")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such webhook endpoint."}
    assert WebhookEndpoint.objects.filter(pk=theirs.pk).exists()


@pytest.mark.parametrize("endpoint_id", ["999999", "99999999999999999999999"])
def test_an_unknown_endpoint_is_404(api, endpoint_id):
    assert api.delete(f"{WEBHOOKS_URL}{endpoint_id}/").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000/hooks",
        "http://127.0.0.1/hooks",
        "http://[::1]/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hooks",
        "http://192.168.0.1/hooks",
        "ftp://example.com/hooks",
        "not a url",
        "",
    ],
)
def test_a_refused_url_is_400_on_url(api, settings, url):
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False

    response = create(api, {"url": url, "events": ["*"]})

    assert response.status_code == 400
    assert list(response.json()) == ["url"]
    assert isinstance(response.json()["url"][0], str)
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "events",
    [[], ["order.nonsense"], ["order.confirmed", "nope"], "order.confirmed", {"a": 1}, None],
)
def test_bad_events_are_400_on_events(api, receiver, webhook_settings, events):
    response = create(api, {"url": receiver.url, "events": events})

    assert response.status_code == 400
    assert list(response.json()) == ["events"]


@pytest.mark.parametrize(
    "body", [[], "just a string", {"url": ["http://example.com"], "events": [["*"]]}]
)
def test_malformed_bodies_are_400_never_500(api, body):
    response = api.post(WEBHOOKS_URL, body, format="json")

    assert response.status_code == 400


def test_malformed_json_is_400(api):
    response = api.post(WEBHOOKS_URL, "{not json", content_type="application/json")

    assert response.status_code == 400


def test_duplicate_events_are_kept_once(api, receiver, webhook_settings):
    response = create(api, {"url": receiver.url, "events": ["*", "order.failed", "*"]})

    assert response.status_code == 201
    assert response.json()["events"] == ["*", "order.failed"]


def test_anonymous_is_401(receiver):
    anonymous = APIClient()

    assert anonymous.get(WEBHOOKS_URL).status_code == 401
    assert anonymous.post(WEBHOOKS_URL, {"url": receiver.url, "events": ["*"]}).status_code == 401
    assert anonymous.get(DELIVERIES_URL).status_code == 401


# --- deliveries ---------------------------------------------------------------------------------


@pytest.fixture
def failed_delivery(catalog, customer, receiver, webhook_settings) -> WebhookDelivery:
    endpoint = make_endpoint(customer, receiver.url, events=["order.failed"])
    notification_send(**order_outcome_notification_kwargs(order=failed(place(customer))))
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    receiver.script(500, 410)
    deliver(delivery)
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    return delivery


def test_deliveries_are_listed_with_their_attempts(api, failed_delivery, other_customer, receiver):
    make_endpoint(other_customer, receiver.url)  # someone else's, with nothing to show here

    response = api.get(DELIVERIES_URL)

    assert response.status_code == 200
    (delivery,) = response.json()["results"]
    assert delivery["id"] == failed_delivery.pk
    assert delivery["endpoint"] == failed_delivery.endpoint_id
    assert delivery["event_kind"] == "order.failed"
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == 2
    assert delivery["payload"]["id"] == delivery["event_id"]
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [500, 410]
    assert "secret" not in str(response.json())


def test_deliveries_filter_by_status_and_endpoint(api, failed_delivery):
    assert api.get(DELIVERIES_URL, {"status": "failed"}).json()["count"] == 1
    assert api.get(DELIVERIES_URL, {"status": "succeeded"}).json()["count"] == 0
    assert api.get(DELIVERIES_URL, {"endpoint": failed_delivery.endpoint_id}).json()["count"] == 1
    bad = api.get(DELIVERIES_URL, {"status": "lost", "endpoint": "x"})
    assert bad.status_code == 400
    assert set(bad.json()) == {"status", "endpoint"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": ""}, "status"),
        ({"endpoint": ""}, "endpoint"),
        ({"endpoint": "0"}, "endpoint"),
        ({"endpoint": "40952106961794758606848"}, "endpoint"),
    ],
)
def test_bad_delivery_filters_are_400(api, query, field):
    response = api.get(DELIVERIES_URL, query)

    assert response.status_code == 400
    assert list(response.json()) == [field]


@pytest.mark.parametrize("url", ["/api/notifications/", WEBHOOKS_URL, DELIVERIES_URL])
def test_an_empty_or_bad_page_is_404_not_page_one(api, url):
    assert api.get(url, {"page": ""}).status_code == 404
    assert api.get(url, {"page": "x"}).status_code == 404
    assert api.get(url, {"page": "1"}).status_code == 200


def test_another_users_deliveries_are_not_listed(failed_delivery, other_customer):
    response = client_for(other_customer).get(DELIVERIES_URL)

    assert response.json()["count"] == 0


def test_replay_a_failed_delivery(
    api, failed_delivery, receiver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as published:
        response = api.post(f"{DELIVERIES_URL}{failed_delivery.pk}/replay/")

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert response.json()["attempt_count"] == 0
    assert len(published) == 1
    deliver(failed_delivery)
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == WebhookDeliveryStatus.SUCCEEDED
    assert [request.headers["webhook-id"] for request in receiver.requests] == [
        failed_delivery.event_id
    ] * 3


def test_replay_of_a_pending_delivery_is_409(api, failed_delivery):
    assert api.post(f"{DELIVERIES_URL}{failed_delivery.pk}/replay/").status_code == 202

    response = api.post(f"{DELIVERIES_URL}{failed_delivery.pk}/replay/")

    assert response.status_code == 409
    assert "only failed deliveries" in response.json()["detail"]


def test_replay_of_another_users_delivery_is_404(failed_delivery, other_customer):
    response = client_for(other_customer).post(f"{DELIVERIES_URL}{failed_delivery.pk}/replay/")

    assert response.status_code == 404
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == WebhookDeliveryStatus.FAILED


# --- caps and throttles -------------------------------------------------------------------------


def test_endpoints_beyond_the_cap_are_400_in_drfs_shape(
    api, customer, other_customer, receiver, webhook_settings
):
    webhook_settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 3
    body = {"url": receiver.url, "events": ["*"]}

    codes = [create(api, body).status_code for _ in range(4)]

    assert codes == [201, 201, 201, 400]
    refused = create(api, body)
    assert refused.status_code == 400
    assert refused.json() == {
        "non_field_errors": ["You have 3 webhook endpoints, the most allowed; delete one first."]
    }
    assert WebhookEndpoint.objects.filter(user=customer).count() == 3
    # Per user; and a deleted endpoint frees its place.
    assert create(client_for(other_customer), body).status_code == 201
    oldest = WebhookEndpoint.objects.filter(user=customer).last()
    assert api.delete(f"{WEBHOOKS_URL}{oldest.pk}/").status_code == 204
    assert create(api, body).status_code == 201
    assert WebhookEndpoint.objects.filter(user=customer).count() == 3


def test_inactive_endpoints_count_towards_the_cap(api, customer, receiver, webhook_settings):
    # Staff can switch an endpoint back on: it must not then exceed the cap.
    webhook_settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 1
    make_endpoint(customer, receiver.url, is_active=False)

    response = create(api, {"url": receiver.url, "events": ["*"]})

    assert response.status_code == 400
    assert list(response.json()) == ["non_field_errors"]


def test_a_bad_body_at_the_cap_still_gets_its_field_errors(
    api, customer, receiver, webhook_settings
):
    webhook_settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 0

    response = create(api, {"url": receiver.url, "events": ["order.nonsense"]})

    assert response.status_code == 400
    assert list(response.json()) == ["events"]


@pytest.fixture
def tight_webhook_throttles(monkeypatch, throttle_counters):
    # Day-long windows: the requests of one test never straddle two windows.
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "webhook_create", "2/day")
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "webhook_replay", "2/day")


def test_registration_is_throttled_per_user(
    api, tight_webhook_throttles, other_customer, receiver, webhook_settings
):
    body = {"url": receiver.url, "events": ["*"]}

    codes = [create(api, body).status_code for _ in range(3)]

    assert codes == [201, 201, 429]
    throttled = create(api, body)
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert "detail" in throttled.json()
    assert WebhookEndpoint.objects.count() == 2
    # Listing and deleting are not throttled; another user is not slowed down.
    assert api.get(WEBHOOKS_URL).status_code == 200
    assert api.delete(f"{WEBHOOKS_URL}{WebhookEndpoint.objects.first().pk}/").status_code == 204
    assert create(client_for(other_customer), body).status_code == 201


def test_replay_is_throttled_per_user(api, tight_webhook_throttles, failed_delivery):
    url = f"{DELIVERIES_URL}{failed_delivery.pk}/replay/"

    codes = [api.post(url).status_code for _ in range(3)]

    # The second replay finds the delivery pending (409) and still spends the budget.
    assert codes == [202, 409, 429]
    throttled = api.post(url)
    assert int(throttled["Retry-After"]) > 0
    assert api.get(DELIVERIES_URL).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_do_not_overrun_the_cap(customer, receiver, webhook_settings):
    webhook_settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 3
    start = threading.Barrier(8)

    def register() -> str:
        try:
            start.wait(timeout=10)
            webhook_endpoint_create(user=customer, url=receiver.url, events=["*"])
            return "created"
        except WebhookEndpointLimitReached:
            return "refused"
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = sorted(pool.map(lambda _: register(), range(8)))

    assert outcomes == ["created"] * 3 + ["refused"] * 5
    assert WebhookEndpoint.objects.filter(user=customer).count() == 3
