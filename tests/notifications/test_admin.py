"""The admin: endpoints without their secret, deliveries with their attempts, the replay action."""

import pytest
from django.test import Client

from notifications.models import WebhookDelivery, WebhookDeliveryStatus
from notifications.services import notification_send
from orders.services import order_outcome_notification_kwargs
from tests.notifications.conftest import deliver, failed, make_endpoint, place


@pytest.fixture
def admin_client_logged_in(django_user_model) -> Client:
    admin = django_user_model.objects.create_superuser(username="root", password="root-password")
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def failed_delivery(catalog, customer, receiver, webhook_settings) -> WebhookDelivery:
    endpoint = make_endpoint(customer, receiver.url, events=["*"])
    notification_send(**order_outcome_notification_kwargs(order=failed(place(customer))))
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    receiver.script(404)
    deliver(delivery)
    delivery.refresh_from_db()
    return delivery


def test_pages_show_endpoints_and_deliveries_with_attempts_never_the_secret(
    admin_client_logged_in, failed_delivery
):
    secret = failed_delivery.endpoint.secret
    pages = [
        "/admin/notifications/webhookendpoint/",
        f"/admin/notifications/webhookendpoint/{failed_delivery.endpoint_id}/change/",
        "/admin/notifications/webhookdelivery/",
        f"/admin/notifications/webhookdelivery/{failed_delivery.pk}/change/",
    ]
    for page in pages:
        response = admin_client_logged_in.get(page)
        assert response.status_code == 200, page
        assert secret not in response.content.decode(), page
    detail = admin_client_logged_in.get(pages[-1]).content.decode()
    assert "404" in detail  # the attempt inline
    assert failed_delivery.event_id in detail


def test_the_replay_action_resets_failed_deliveries(
    admin_client_logged_in, failed_delivery, receiver, django_capture_on_commit_callbacks
):
    assert failed_delivery.status == WebhookDeliveryStatus.FAILED

    with django_capture_on_commit_callbacks() as published:
        response = admin_client_logged_in.post(
            "/admin/notifications/webhookdelivery/",
            {"action": "replay_failed_deliveries", "_selected_action": [failed_delivery.pk]},
            follow=True,
        )

    assert response.status_code == 200
    assert "Replayed 1 delivery" in response.content.decode()
    assert len(published) == 1
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == WebhookDeliveryStatus.PENDING
    deliver(failed_delivery)
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == WebhookDeliveryStatus.SUCCEEDED
    assert [attempt.status_code for attempt in failed_delivery.attempts.all()] == [404, 200]
