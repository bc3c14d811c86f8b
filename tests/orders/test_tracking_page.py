"""The live tracking page in a real headless browser (Debian's chromium, driven by Playwright).

Screenshots of every state, at a desktop and a phone width, are kept as test artefacts in
`$TEST_ARTIFACTS_DIR/screenshots` (or a temporary directory printed in the test output).
"""

import pytest
from rest_framework.authtoken.models import Token

from tests.factories import order_in_state
from tests.orders.conftest import VIEWPORTS, needs_chromium, overflow_px

# What must never reach a customer: exception and task text, and promises nothing keeps.
INTERNAL_TEXT = [
    "TransientError",
    "ConnectTimeout",
    "attempt(s)",
    "Traceback",
    "step_retry",
    "confirm_order",
    "authorize_payment",
    "card_declined",
    "alerted",
    "will retry",
]

pytestmark = [needs_chromium]


def tiles(page) -> dict[str, tuple[str, str]]:
    """Each progress tile as step -> (state, label)."""
    return {
        li.get_attribute("data-step"): (li.get_attribute("data-state"), li.inner_text().strip())
        for li in page.locator("#steps li").all()
    }


def redraw_from_the_api(page) -> None:
    """Draw the page once more from GET /api/orders/<id>/, as a live update does."""
    page.evaluate(
        "async () => render(await (await fetch(url, {credentials: 'same-origin'})).json())"
    )


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_the_tracking_page_follows_an_order_to_confirmed_without_a_reload(
    browser, live_server, celery_worker, sandbox, catalog, customer, screenshots_dir
):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/?next=/api/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/api/")

    token = Token.objects.create(user=customer)
    response = page.request.post(
        f"{live_server.url}/api/orders/",
        data={"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_slow"},
        headers={"Authorization": f"Token {token.key}"},
    )
    assert response.status == 202
    order_id = response.json()["id"]

    page.goto(f"{live_server.url}/orders/{order_id}/")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    # tok_slow keeps the order unfinished for 2 s: the page must show it moving on its own.
    assert page.get_attribute("main", "data-status") != "confirmed"
    assert tiles(page)["payment"] == ("current", "Authorizing payment…")
    page.wait_for_selector("#final.ok", timeout=30_000)
    assert "Order confirmed" in page.text_content("[data-testid=final]")
    assert page.text_content("[data-testid=status]") == "Confirmed"
    assert page.locator("#steps li[data-state=done]").count() == 5
    assert "Payment taken" in page.text_content("#timeline")
    assert navigations == []  # no reload happened
    page.screenshot(path=str(screenshots_dir / "live-confirmed.png"), full_page=True)
    context.close()


# Per terminal state: the tiles as (state, label), then text the outcome box must show.
EXPECTED = {
    "confirmed": (
        {
            "accepted": ("done", "Order received"),
            "payment": ("done", "Payment authorized"),
            "cart": ("done", "Items available"),
            "stock": ("done", "Items reserved"),
            "confirmation": ("done", "Confirmed"),
        },
        ["Order confirmed", "Your payment was taken and your items are reserved for you."],
    ),
    "payment_declined": (
        {
            "accepted": ("done", "Order received"),
            "payment": ("failed", "Payment declined"),
            "cart": ("pending", "Items check"),
            "stock": ("pending", "Reservation"),
            "confirmation": ("pending", "Confirmation"),
        },
        ["Payment declined", "Nothing was charged", "another payment method"],
    ),
    "cart_rejected": (
        {
            "accepted": ("done", "Order received"),
            "payment": ("undone", "Authorization released"),
            "cart": ("failed", "Items unavailable"),
            "stock": ("pending", "Reservation"),
            "confirmation": ("pending", "Confirmation"),
        },
        [
            "We could not fulfil your order",
            "PEN-1: only 3 in stock, 5 ordered.",
            "Your payment authorization was released: you have not been charged.",
        ],
    ),
    "failed": (
        {
            "accepted": ("done", "Order received"),
            "payment": ("undone", "Authorization released"),
            "cart": ("done", "Items available"),
            "stock": ("undone", "Items released"),
            "confirmation": ("failed", "Not confirmed"),
        },
        [
            "We could not complete your order",
            "Your payment authorization was released: you have not been charged.",
            "The items reserved for you were put back in stock.",
        ],
    ),
    "failed_at_payment": (
        {
            "accepted": ("done", "Order received"),
            "payment": ("failed", "Payment not completed"),
            "cart": ("pending", "Items check"),
            "stock": ("pending", "Reservation"),
            "confirmation": ("pending", "Confirmation"),
        },
        ["We could not complete your order", "Nothing was charged."],
    ),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("state", list(EXPECTED))
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_each_outcome_draws_what_happened_in_customer_language(
    signed_in_page, live_server, catalog, customer, screenshots_dir, state, viewport
):
    if state == "cart_rejected":  # five pens, three in stock
        order = order_in_state(user=customer, state=state, product=catalog["PEN-1"], quantity=5)
    else:
        order = order_in_state(user=customer, state=state, product=catalog["BOOK-1"])
    page = signed_in_page(customer, viewport)
    page.goto(f"{live_server.url}/orders/{order.pk}/")
    expected_tiles, expected_text = EXPECTED[state]

    for drawn_by in ("page load", "a live update"):
        if drawn_by == "a live update":
            redraw_from_the_api(page)
        assert tiles(page) == expected_tiles, drawn_by
        final = page.locator("[data-testid=final]")
        assert final.get_attribute("class") == ("ok" if state == "confirmed" else "bad")
        for text in expected_text:
            assert text in final.inner_text(), (drawn_by, text)

    body = page.inner_text("body")
    source = page.content()
    for internal in INTERNAL_TEXT:
        assert internal not in body, internal
        assert internal not in source, internal
    if state == "payment_declined":  # said once, not once per layer that knew it
        assert page.inner_text("[data-testid=final]").lower().count("declined") == 1
        assert body.lower().count("nothing was charged") == 1
    page.screenshot(path=str(screenshots_dir / f"{state}-{viewport}.png"), full_page=True)
    assert overflow_px(page) <= 0


@pytest.mark.django_db(transaction=True)
def test_retries_read_as_the_provider_being_busy_and_nothing_is_claimed_too_early(
    signed_in_page, live_server, catalog, customer, screenshots_dir
):
    order = order_in_state(user=customer, state="failed_at_payment", product=catalog["BOOK-1"])
    order.status, order.failed_step, order.failure_reason = "accepted", "", ""
    order.save()
    order.events.filter(name__in=["step_failed", "failed"]).delete()
    page = signed_in_page(customer)
    page.goto(f"{live_server.url}/orders/{order.pk}/")

    assert tiles(page)["payment"] == ("current", "Authorizing payment…")
    assert page.locator("#steps li[data-state=done]").count() == 1
    rows = page.locator("#timeline tr").all_inner_texts()
    assert len(rows) == 2  # five retries make one row
    assert "Payment provider busy, retrying… (5 tries)" in rows[1]
    assert page.locator("#final").is_hidden()
    page.screenshot(path=str(screenshots_dir / "retrying-desktop.png"), full_page=True)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_my_orders_links_each_tracking_page(
    signed_in_page, live_server, catalog, customer, screenshots_dir, viewport
):
    orders = [
        order_in_state(user=customer, state=state, product=catalog["BOOK-1"])
        for state in ("confirmed", "payment_declined", "failed", "accepted")
    ]
    page = signed_in_page(customer, viewport)
    page.goto(f"{live_server.url}/")

    assert page.url == f"{live_server.url}/orders/"
    rows = page.locator("tr[data-order]")
    assert [row.get_attribute("data-order") for row in rows.all()] == [
        str(order.pk) for order in reversed(orders)
    ]
    assert rows.first.locator(".pill").inner_text() == "Processing"
    page.screenshot(path=str(screenshots_dir / f"my-orders-{viewport}.png"), full_page=True)
    assert overflow_px(page) <= 0
    rows.last.locator("a").click()
    page.wait_for_url(f"{live_server.url}/orders/{orders[0].pk}/")
    assert page.locator("#final.ok").is_visible()


@pytest.mark.django_db
def test_the_tracking_page_needs_a_login_and_the_owner(client, catalog, customer, other_customer):
    order = order_in_state(user=customer, state="accepted", product=catalog["BOOK-1"])
    response = client.get(f"/orders/{order.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    client.force_login(other_customer)
    assert client.get(f"/orders/{order.pk}/").status_code == 404
    client.force_login(customer)
    response = client.get(f"/orders/{order.pk}/")
    assert response.status_code == 200
    assert str(order.pk) in response.content.decode()
