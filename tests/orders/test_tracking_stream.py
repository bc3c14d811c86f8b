"""The tracking page over the async edge: a real Chromium (Debian's, driven by Playwright) on the
ASGI server, the real pipeline; the bar moves through every step from server-sent events."""

import os
import re

import pytest
from rest_framework.authtoken.models import Token

from tests.asgi_server import asgi_server

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is absent (make test installs it with apt when run as root)",
    ),
]

# Every change of the bar (how many steps are done) and of the status, as the page shows them.
RECORD_CHANGES = """
window.barSeen = []; window.statusSeen = [];
document.addEventListener("DOMContentLoaded", () => {
  const record = () => {
    const done = document.querySelectorAll("#steps li.done").length;
    if (window.barSeen.at(-1) !== done) window.barSeen.push(done);
    const status = document.querySelector("[data-testid=status]").textContent;
    if (window.statusSeen.at(-1) !== status) window.statusSeen.push(status);
  };
  new MutationObserver(record).observe(document.body, {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
  record();
});
"""


@pytest.fixture
def server():
    with asgi_server() as running:
        yield running


@pytest.fixture
def browser(monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the test's ORM calls stay sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def test_the_bar_moves_through_every_step_from_the_stream_without_polling(
    browser, server, celery_worker, sandbox, catalog, customer
):
    page = browser.new_page()
    page.goto(f"{server.url}/accounts/login/?next=/api/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/api/")
    token = Token.objects.create(user=customer)
    response = page.request.post(
        f"{server.url}/api/orders/",
        data={"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_slow"},
        headers={"Authorization": f"Token {token.key}"},
    )
    assert response.status == 202
    order_id = response.json()["id"]

    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.add_init_script(RECORD_CHANGES)
    page.goto(f"{server.url}/orders/{order_id}/")
    page.wait_for_selector("#final.ok", timeout=30_000)

    # "Order received" is done from the start (orders/presentation.py); then one tile per step.
    assert page.evaluate("window.barSeen") == [1, 2, 3, 4, 5]
    # The status pill says it in the customer's words, ending "Confirmed".
    assert page.evaluate("window.statusSeen")[-1] == "Confirmed"
    assert "Payment taken" in page.text_content("#timeline")  # the capture, in customer words
    paths = [re.sub(r"^https?://[^/]+", "", url) for url in requested]
    assert f"/api/orders/{order_id}/stream/" in paths
    assert f"/api/orders/{order_id}/" not in paths  # no polling request
