"""Notification kinds are declared by the apps that emit them, and read when they are used."""

import importlib.util

import pytest

from notifications import kinds
from notifications.services import notification_send
from orders.models import TERMINAL_STATUSES

ORDER_KINDS = {"order.confirmed", "order.payment_declined", "order.cart_rejected", "order.failed"}


def test_the_notifications_app_declares_no_kind_of_another_app():
    # A fresh copy of the module, before any app has registered anything.
    spec = importlib.util.spec_from_file_location("fresh_kinds", kinds.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)

    assert isinstance(fresh.EVENT_KINDS, set)
    assert not fresh.EVENT_KINDS
    assert fresh.event_kinds() == []


def test_the_orders_app_declares_its_kinds_when_ready():
    assert set(kinds.event_kinds()) == {*ORDER_KINDS, "batch.finished"}
    # Every terminal status is an outcome an endpoint can subscribe to.
    assert {f"order.{status}" for status in TERMINAL_STATUSES} == ORDER_KINDS


@pytest.fixture
def parcel_kind():
    """A kind registered after the serializers, services and views were imported."""

    def render(user_id: int, context: dict) -> kinds.Message:
        return kinds.Message(
            kind="parcel.shipped",
            title="Your parcel is on its way",
            body="Tracking number 42.",
            dedupe_key=f"parcel:{context['parcel']}:shipped",
            data={"parcel": context["parcel"]},
        )

    kinds.register("parcel", render, emits=["parcel.shipped"])
    yield "parcel"
    kinds._renderers.pop("parcel", None)
    kinds.EVENT_KINDS.discard("parcel.shipped")


def test_a_kind_declared_at_runtime_can_be_subscribed_to_and_delivered(
    api, customer, receiver, webhook_settings, parcel_kind
):
    response = api.post(
        "/api/webhooks/", {"url": receiver.url, "events": ["parcel.shipped"]}, format="json"
    )

    assert response.status_code == 201
    notification = notification_send(kind=parcel_kind, user_id=customer.pk, context={"parcel": 7})
    assert notification.webhook_deliveries.get().event_kind == "parcel.shipped"


def test_an_undeclared_kind_cannot_be_subscribed_to(api, receiver, webhook_settings):
    response = api.post(
        "/api/webhooks/", {"url": receiver.url, "events": ["parcel.shipped"]}, format="json"
    )

    assert response.status_code == 400
    assert "Unknown kind(s): parcel.shipped" in response.json()["events"][0]


def test_emits_is_a_list_of_names_not_a_string():
    with pytest.raises(TypeError, match="not a string"):
        kinds.register("parcel", lambda user_id, context: None, emits="parcel.shipped")

    assert "parcel" not in kinds._renderers
    assert not {"p", "a", "r"} & kinds.EVENT_KINDS
