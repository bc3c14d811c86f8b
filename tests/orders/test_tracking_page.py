"""The live tracking page in a real headless browser (Debian's chromium, driven by Playwright)."""

import os

import pytest
from rest_framework.authtoken.models import Token

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is absent (make test installs it with apt when run as root)",
    ),
]


@pytest.fixture
def browser(monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # still synchronous (the pattern pytest-playwright documents for Django).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def test_the_tracking_page_follows_an_order_to_confirmed_without_a_reload(
    browser, live_server, celery_worker, sandbox, catalog, customer, tmp_path
):
    page = browser.new_page()
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
    assert page.text_content("[data-testid=status]") != "confirmed"
    page.wait_for_selector("#final.ok", timeout=30_000)
    assert "Confirmed" in page.text_content("[data-testid=final]")
    assert page.text_content("[data-testid=status]") == "confirmed"
    assert page.locator("#steps li.done").count() == 5
    assert "payment_captured" in page.text_content("#timeline")
    assert navigations == []  # no reload happened
    page.screenshot(path=str(tmp_path / "tracking.png"), full_page=True)
    assert (tmp_path / "tracking.png").stat().st_size > 0


def test_the_tracking_page_needs_a_login_and_the_owner(client, catalog, customer, other_customer):
    from orders.services import order_create

    order, _ = order_create(
        user=customer, lines=[{"sku": "BOOK-1", "quantity": 1}], payment_token="tok_ok"
    )
    response = client.get(f"/orders/{order.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    client.force_login(other_customer)
    assert client.get(f"/orders/{order.pk}/").status_code == 404
    client.force_login(customer)
    response = client.get(f"/orders/{order.pk}/")
    assert response.status_code == 200
    assert str(order.pk) in response.content.decode()
