"""The admin fits the money: settled orders read-only, stock changed by deltas only, dead letters
with their replay, a pipeline-health page for staff, changelists that fit a 1280 px screen."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.db.models import F
from django.test import Client

from orders.models import DeadLetter, Order, OrderLine, Product
from orders.services import replay_order
from tests.factories import order_failed, order_in_state
from tests.orders.conftest import needs_chromium

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(django_user_model) -> Client:
    root = django_user_model.objects.create_superuser(username="root", password="root-password")
    client = Client()
    client.force_login(root)
    return client


def order_page(client: Client, order: Order) -> str:
    response = client.get(f"/admin/orders/order/{order.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize("state", ["confirmed", "cart_rejected", "failed", "payment_authorized"])
def test_a_paid_or_ended_order_cannot_be_edited_or_deleted(admin_client, catalog, customer, state):
    order = order_in_state(user=customer, state=state, product=catalog["BOOK-1"])

    html = order_page(admin_client, order)

    assert 'name="_save"' not in html
    assert 'name="_continue"' not in html
    assert "deletelink" not in html
    # The inline's own "Add another" link is drawn by the admin's JavaScript up to this number
    # (the browser test below looks at the drawn page).
    assert 'name="lines-MAX_NUM_FORMS" value="0"' in html
    assert 'name="lines-0-quantity"' not in html  # the line is shown, not editable
    assert "BOOK-1" in html
    # Nor by posting what the page no longer offers.
    posted = admin_client.post(
        f"/admin/orders/order/{order.pk}/change/",
        {"lines-TOTAL_FORMS": "2", "lines-INITIAL_FORMS": "1", "lines-1-sku": "MUG-1"},
    )
    assert posted.status_code == 403
    assert admin_client.post(f"/admin/orders/order/{order.pk}/delete/").status_code == 403
    bulk = admin_client.post(
        "/admin/orders/order/",
        {"action": "delete_selected", "_selected_action": [str(order.pk)], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert Order.objects.filter(pk=order.pk).exists()
    assert OrderLine.objects.filter(order=order).count() == 1


def test_a_stale_product_form_does_not_undo_a_reservation(admin_client, catalog):
    book = catalog["BOOK-1"]
    form = admin_client.get(f"/admin/orders/product/{book.pk}/change/")
    assert form.status_code == 200
    # Meanwhile an order reserves two books, the way confirm_order does.
    Product.objects.filter(pk=book.pk).update(stock=F("stock") - 2)

    # The form saved as opened, 100 books on it, a new name typed in.
    saved = admin_client.post(
        f"/admin/orders/product/{book.pk}/change/",
        {
            "sku": "BOOK-1",
            "name": "A better book",
            "price": "12.50",
            "currency": "EUR",
            "stock": 100,
        },
    )

    assert saved.status_code == 302, saved.content.decode()[:2000]
    book.refresh_from_db()
    assert (book.name, book.stock) == ("A better book", 98)


def test_staff_add_and_remove_stock_by_a_delta_never_below_zero(admin_client, catalog):
    pen = catalog["PEN-1"]  # 3 in stock
    url = f"/admin/orders/product/{pen.pk}/change/"
    fields = {"sku": "PEN-1", "name": "A pen", "price": "1.20", "currency": "EUR"}

    assert admin_client.post(url, {**fields, "stock_change": "5"}).status_code == 302
    pen.refresh_from_db()
    assert pen.stock == 8

    Product.objects.filter(pk=pen.pk).update(stock=F("stock") - 6)  # two left
    refused = admin_client.post(url, {**fields, "stock_change": "-3"})
    assert refused.status_code == 200
    assert "only 2 in stock" in refused.content.decode()
    pen.refresh_from_db()
    assert pen.stock == 2

    assert admin_client.post(url, {**fields, "stock_change": "-2"}).status_code == 302
    pen.refresh_from_db()
    assert pen.stock == 0


def test_a_new_product_gets_its_opening_stock(admin_client):
    response = admin_client.post(
        "/admin/orders/product/add/",
        {"sku": "CUP-1", "name": "A cup", "price": "4.00", "currency": "EUR", "stock": "7"},
    )
    assert response.status_code == 302
    assert Product.objects.get(sku="CUP-1").stock == 7


def test_a_dead_letter_shows_its_replay_and_where_the_order_is_now(admin_client, catalog, customer):
    order = order_in_state(user=customer, state="accepted", product=catalog["BOOK-1"])
    order_failed(order)
    letter = DeadLetter.objects.get(order=order)
    page = admin_client.get(f"/admin/orders/deadletter/{letter.pk}/change/").content.decode()
    assert "Not replayed" in page

    replay_order(order_id=str(order.pk))

    listing = admin_client.get("/admin/orders/deadletter/").content.decode()
    page = admin_client.get(f"/admin/orders/deadletter/{letter.pk}/change/").content.decode()
    assert "Not replayed" not in page
    assert re.search(r"Replayed .*; the order is now <a [^>]*>accepted</a>", page)
    assert f"/admin/orders/order/{order.pk}/change/" in page
    assert f"/orders/{order.pk}/" in page  # the customer's tracking page
    assert "accepted" in listing
    assert 'name="_save"' not in page


def test_the_pipeline_health_page_is_for_staff(admin_client, client, catalog, customer, staff):
    order = order_in_state(user=customer, state="accepted", product=catalog["BOOK-1"])
    order_failed(order)

    response = admin_client.get("/admin/orders/order/pipeline-health/")

    assert response.status_code == 200
    html = response.content.decode()
    for section in ("Provider rate limiter", "Queues", "Outbox", "Dead letters", "Stuck orders"):
        assert section in html
    health = response.context["health"]
    assert health["dead_letters"]["unreplayed"] == 1
    assert set(health["queues"]) >= {"orders", "provider", "notifications"}
    assert "pipeline-health" in admin_client.get("/admin/orders/order/").content.decode()

    client.force_login(customer)
    refused = client.get("/admin/orders/order/pipeline-health/")
    assert refused.status_code == 302
    assert "/admin/login/" in refused["Location"]
    client.force_login(staff)  # staff, but not allowed to see orders
    assert client.get("/admin/orders/order/pipeline-health/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_order"))
    assert client.get("/admin/orders/order/pipeline-health/").status_code == 200


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_the_changelists_fit_a_1280_pixel_screen(
    signed_in_page, live_server, django_user_model, catalog, customer, screenshots_dir
):
    root = django_user_model.objects.create_superuser(username="root", password="root-password")
    for state in ("confirmed", "cart_rejected", "failed", "accepted"):
        order_in_state(user=customer, state=state, product=catalog["BOOK-1"])
    order_failed(order_in_state(user=customer, state="accepted", product=catalog["MUG-1"]))
    page = signed_in_page(root, "desktop")
    confirmed = Order.objects.get(status="confirmed")
    page.goto(f"{live_server.url}/admin/orders/order/{confirmed.pk}/change/")
    page.screenshot(path=str(screenshots_dir / "admin-confirmed-order.png"), full_page=True)
    # The inline script draws an "add" row per inline and hides it when nothing may be added.
    assert page.locator(".add-row >> visible=true").count() == 0
    assert page.locator("text=/Add another/ >> visible=true").count() == 0
    assert page.locator("input[type=submit]").count() == 0
    assert page.get_by_text("Delete").count() == 0
    for path in (
        "orders/order",
        "orders/deadletter",
        "orders/outboxmessage",
        "orders/product",
        "orders/order/pipeline-health",
    ):
        page.goto(f"{live_server.url}/admin/{path}/")
        name = path.replace("/", "-")
        page.screenshot(path=str(screenshots_dir / f"admin-{name}.png"), full_page=True)
        # The admin scrolls a wide table inside its box: a cut-off column shows there.
        overflow = page.evaluate(
            """() => Math.max(
                document.documentElement.scrollWidth - window.innerWidth,
                ...[...document.querySelectorAll(".results")].map(
                    (box) => box.scrollWidth - box.clientWidth))"""
        )
        assert overflow <= 0, f"{path} is {overflow}px wider than the screen"


def test_a_failed_order_is_replayed_from_its_page(admin_client, catalog, customer):
    order = order_in_state(user=customer, state="accepted", product=catalog["BOOK-1"])
    order_failed(order)
    replay_url = f"/admin/orders/order/{order.pk}/replay/"
    assert replay_url in order_page(admin_client, order)

    assert admin_client.get(replay_url).status_code == 405
    response = admin_client.post(replay_url)

    assert response.status_code == 302
    order.refresh_from_db()
    assert (order.status, order.replays) == ("accepted", 1)
    assert DeadLetter.objects.get(order=order).replayed_at is not None
    assert replay_url not in order_page(admin_client, order)  # only a failed order replays
