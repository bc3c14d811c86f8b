"""What the customer is told (orders/presentation.py), through the API, the pages and the mail."""

import pytest
from django.core import mail
from django.utils import translation

from notifications.services import notification_send
from orders.models import Order, OrderEvent, OrderStatus
from orders.presentation import order_progress, order_progress_data
from orders.services import order_create, order_outcome_notification_kwargs
from orders.tasks import recover_orders
from tests.conftest import client_for, wait_for
from tests.factories import CONNECT_TIMEOUT, ORDER_STATES, order_in_state

pytestmark = pytest.mark.django_db


def states(progress: dict) -> dict[str, str]:
    return {step["key"]: step["state"] for step in progress["steps"]}


def add_event(order, name: str, **detail) -> None:
    OrderEvent.objects.create(
        order=order, name=name, correlation_id=order.correlation_id, detail=detail
    )


def test_an_accepted_order_is_authorizing_not_authorized(catalog, customer):
    order = order_in_state(user=customer, state="accepted", product=catalog["BOOK-1"])

    progress = order_progress_data(order)

    assert states(progress) == {
        "accepted": "done",
        "payment": "current",
        "cart": "pending",
        "stock": "pending",
        "confirmation": "pending",
    }
    assert progress["steps"][1]["label"] == "Authorizing payment…"
    assert progress["outcome"] is None
    assert progress["headline"] == progress["message"] == ""


def test_an_authorized_order_shows_the_payment_done_and_the_cart_check_under_way(catalog, customer):
    order = order_in_state(user=customer, state="payment_authorized", product=catalog["BOOK-1"])

    progress = order_progress_data(order)

    assert states(progress)["payment"] == "done"
    assert states(progress)["cart"] == "current"


def test_a_rejected_cart_being_compensated_shows_the_release_under_way(catalog, customer):
    order = order_in_state(user=customer, state="payment_authorized", product=catalog["PEN-1"])
    add_event(order, "cart_check_failed", problems=["PEN-1: only 3 in stock, 5 ordered."])
    order.status = OrderStatus.COMPENSATING

    progress = order_progress_data(order)

    assert states(progress)["cart"] == "failed"
    assert progress["steps"][1] == {
        "key": "payment",
        "state": "current",
        "label": "Releasing authorization…",
    }
    assert progress["status_label"] == "Cancelling"


def test_a_sold_out_reservation_marks_the_stock_tile(catalog, customer):
    order = order_in_state(user=customer, state="payment_authorized", product=catalog["MUG-1"])
    add_event(order, "cart_verified")
    add_event(order, "stock_reservation_failed", sku="MUG-1")
    add_event(order, "payment_refunded", status="refunded")
    add_event(order, "cart_rejected")
    order.status = OrderStatus.CART_REJECTED

    progress = order_progress_data(order)

    assert states(progress) == {
        "accepted": "done",
        "payment": "undone",
        "cart": "done",
        "stock": "failed",
        "confirmation": "pending",
    }
    assert progress["steps"][3]["label"] == "Sold out"
    assert progress["problems"] == ["MUG-1 sold out before it could be reserved."]
    assert progress["failed_step"] == "stock"


def test_a_failed_order_left_unsettled_says_what_is_still_held(catalog, customer):
    """SPEC §2 says this must not happen; if it does, the page does not claim a release."""
    order = order_in_state(user=customer, state="payment_authorized", product=catalog["BOOK-1"])
    add_event(order, "failed", step="check_cart", error=CONNECT_TIMEOUT)
    order.status = OrderStatus.FAILED

    progress = order_progress_data(order)

    assert states(progress)["cart"] == "failed"
    assert progress["undone"] == []
    assert progress["held"] == ["Your payment is authorized but has not been taken."]


def test_a_failed_capture_left_unsettled_says_the_items_are_still_held(catalog, customer):
    order = order_in_state(user=customer, state="payment_authorized", product=catalog["BOOK-1"])
    add_event(order, "cart_verified")
    add_event(order, "stock_reserved")
    add_event(order, "failed", step="confirm_order", error=CONNECT_TIMEOUT)
    order.status = OrderStatus.FAILED

    progress = order_progress_data(order)

    assert states(progress)["confirmation"] == "failed"
    assert progress["held"] == [
        "Your payment is authorized but has not been taken.",
        "The items are still reserved for you.",
    ]


def test_a_settling_order_shows_where_it_stopped_and_the_release_under_way(catalog, customer):
    order = order_in_state(user=customer, state="payment_authorized", product=catalog["BOOK-1"])
    add_event(order, "cart_verified")
    add_event(order, "stock_reserved")
    add_event(order, "step_failed", step="confirm_order", error=CONNECT_TIMEOUT)
    add_event(order, "settling", **{"from": "stock_reserved"})
    order.status = OrderStatus.SETTLING

    progress = order_progress_data(order)

    assert states(progress) == {
        "accepted": "done",
        "payment": "current",
        "cart": "done",
        "stock": "done",
        "confirmation": "failed",
    }
    assert progress["steps"][1]["label"] == "Releasing authorization…"
    assert (progress["status_label"], progress["outcome"]) == ("Cancelling", None)
    assert [row["text"] for row in progress["timeline"]][-2:] == [
        "Stopped by a problem on our side",
        "Giving back what your order held…",
    ]


def test_an_authorization_found_by_settlement_is_shown_released(catalog, customer):
    """The authorize answer was lost: settlement asked the provider, found it and voided it."""
    order = order_in_state(user=customer, state="accepted", product=catalog["BOOK-1"])
    add_event(order, "step_failed", step="authorize_payment", error=CONNECT_TIMEOUT)
    add_event(order, "settling", **{"from": "accepted"})
    add_event(order, "settled", provider="refunded", refunded=True, stock_released=False)
    add_event(order, "failed", step="authorize_payment", refunded=True, stock_released=False)
    order.status = OrderStatus.FAILED

    progress = order_progress_data(order)

    assert states(progress)["payment"] == "failed"
    assert progress["undone"] == [
        "Your payment authorization was released: you have not been charged."
    ]
    assert "Payment authorization released" in [row["text"] for row in progress["timeline"]]


def test_a_replayed_order_is_back_in_progress(catalog, customer):
    order = order_in_state(user=customer, state="failed_at_payment", product=catalog["BOOK-1"])
    add_event(order, "replayed", from_step="authorize_payment", by="staff")
    order.status = OrderStatus.ACCEPTED

    progress = order_progress_data(order)

    assert states(progress)["payment"] == "current"
    assert progress["failed_step"] is None
    assert progress["timeline"][-1]["text"] == "Your order was restarted"


def test_internal_events_stay_off_the_timeline(catalog, customer):
    order = order_in_state(user=customer, state="confirmed", product=catalog["BOOK-1"])
    add_event(order, "notification_resent", key="order:x:confirmed:0")

    texts = [row["text"] for row in order_progress_data(order)["timeline"]]

    assert texts == [
        "Order received",
        "Payment provider busy, retrying…",
        "Payment authorized",
        "Items checked: in stock and at the listed price",
        "Items reserved for you",
        "Payment taken",
        "Order confirmed",
    ]


def test_strings_are_marked_for_translation(catalog, customer):
    order = order_in_state(user=customer, state="confirmed", product=catalog["BOOK-1"])
    progress = order_progress(order)
    # Lazy until rendered: each request and each mail renders in its own language.
    assert type(progress["headline"]).__name__ == "__proxy__"
    with translation.override("fr"):
        assert str(progress["headline"]) == "Order confirmed"  # no catalogue yet: the source


@pytest.mark.parametrize("state", ORDER_STATES)
def test_the_order_detail_carries_the_progress_and_no_internal_text(catalog, customer, state):
    order = order_in_state(user=customer, state=state, product=catalog["BOOK-1"])

    body = client_for(customer).get(f"/api/orders/{order.pk}/").json()

    assert body["progress"] == order_progress_data(order)
    rendered = repr(body["progress"])
    for internal in ("TransientError", "attempt(s)", "step_retry", "confirm_order"):
        assert internal not in rendered


@pytest.mark.parametrize("state", ["failed", "cart_rejected", "payment_declined"])
def test_the_outcome_mail_says_what_was_undone_in_customer_words(catalog, customer, state):
    order = order_in_state(user=customer, state=state, product=catalog["BOOK-1"])

    notification = notification_send(**order_outcome_notification_kwargs(order=order))

    email = mail.outbox[0].body
    assert notification.body in email
    for internal in ("TransientError", "attempt(s)", "confirm_order", "card_declined", "Reason:"):
        assert internal not in email
    if state != "payment_declined":
        assert "Your payment authorization was released: you have not been charged." in email
    if state == "failed":
        assert "The items reserved for you were put back in stock." in email
    if state == "payment_declined":  # the template says it once; the body does not repeat it
        assert email.count("nothing was charged") == 1
        assert "Nothing was charged" not in email


def test_my_orders_lists_the_users_own_orders_newest_first(
    client, catalog, customer, other_customer, staff
):
    first = order_in_state(user=customer, state="confirmed", product=catalog["BOOK-1"])
    second = order_in_state(user=customer, state="payment_declined", product=catalog["BOOK-1"])
    theirs = order_in_state(user=other_customer, state="confirmed", product=catalog["BOOK-1"])
    staff_own = order_in_state(user=staff, state="accepted", product=catalog["BOOK-1"])

    assert client.get("/orders/")["Location"].startswith("/accounts/login/")
    assert client.get("/")["Location"] == "/orders/"
    client.force_login(customer)
    page = client.get("/orders/")

    assert page.status_code == 200
    assert [row["order"].pk for row in page.context["rows"]] == [second.pk, first.pk]
    html = page.content.decode()
    assert f"/orders/{first.pk}/" in html and f"/orders/{second.pk}/" in html
    assert str(theirs.pk) not in html
    assert "Payment declined" in html and "Confirmed" in html
    client.force_login(staff)
    assert [row["order"].pk for row in client.get("/orders/").context["rows"]] == [staff_own.pk]


# --- what the real pipeline records reads right (no hand-written timeline) -----------------------


def _place(user, *, sku: str, quantity: int):
    order, _ = order_create(
        user=user, lines=[{"sku": sku, "quantity": quantity}], payment_token="tok_ok"
    )
    return order


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_cart_rejected_by_the_pipeline_reads_as_released(celery_worker, catalog, customer):
    order = _place(customer, sku="PEN-1", quantity=5)  # three in stock

    wait_for(lambda: Order.objects.get(pk=order.pk).is_terminal, timeout=30)

    progress = order_progress_data(Order.objects.get(pk=order.pk))
    assert progress["status"] == "cart_rejected"
    assert states(progress)["payment"] == "undone"
    assert states(progress)["cart"] == "failed"
    assert progress["problems"] == ["PEN-1: only 3 in stock, 5 ordered."]
    assert progress["undone"] == [
        "Your payment authorization was released: you have not been charged."
    ]


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_an_order_settled_after_an_outage_reads_as_released(
    celery_worker, sandbox, catalog, customer, settings
):
    """The provider drops every call: authorize runs out of retries with an authorization that
    may exist; settlement, once the provider is back, asks (and finds and voids it)."""
    settings.PIPELINE_MAX_RETRIES = 1
    sandbox.set_outage(True, mode="drop")
    order = _place(customer, sku="BOOK-1", quantity=1)
    wait_for(lambda: Order.objects.get(pk=order.pk).status == OrderStatus.SETTLING, timeout=30)
    assert order_progress_data(Order.objects.get(pk=order.pk))["status_label"] == "Cancelling"
    sandbox.set_outage(False)

    def settled() -> bool:
        recover_orders.delay()  # what beat does
        return Order.objects.get(pk=order.pk).is_terminal

    wait_for(settled, timeout=60, interval=1.0)

    order = Order.objects.get(pk=order.pk)
    progress = order_progress_data(order)
    assert order.status == OrderStatus.FAILED
    assert states(progress)["payment"] == "failed"
    assert progress["headline"] == "We could not complete your order"
    assert progress["held"] == []
    if sandbox.stats()["refunds"]:  # the provider had authorized: settlement voided it
        assert progress["undone"] == [
            "Your payment authorization was released: you have not been charged."
        ]
    else:
        assert progress["undone"] == ["Nothing was charged."]
    texts = [row["text"] for row in progress["timeline"]]
    assert texts[-1] == "Order not completed"
    assert "Stopped by a problem on our side" in texts
