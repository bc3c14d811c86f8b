"""Browser fixtures for the pages (Debian's chromium, driven by Playwright)."""

import os
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

CHROMIUM = "/usr/bin/chromium"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is absent (make test installs it with apt when run as root)",
)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # still synchronous (the pattern pytest-playwright documents for Django).
    with pytest.MonkeyPatch.context() as patch, sync_api.sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
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


@pytest.fixture(scope="session")
def screenshots_dir(request) -> Path:
    """Where the page tests keep their screenshots: outside the checkout, said in the output."""
    root = os.environ.get("TEST_ARTIFACTS_DIR") or tempfile.mkdtemp(prefix="orderflow-artefacts-")
    directory = Path(root) / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:  # past output capture: every run says where
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\npage screenshots: {directory}")
    return directory


@pytest.fixture
def signed_in_page(browser, live_server):
    """signed_in_page(user, viewport): a browser page carrying `user`'s session."""
    contexts = []

    def open_page(user, viewport: str = "desktop"):
        client = Client()
        client.force_login(user)
        context = browser.new_context(viewport=VIEWPORTS[viewport])
        contexts.append(context)
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": live_server.url,
                }
            ]
        )
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def overflow_px(page) -> int:
    """How far the page runs past the screen, or a table past its box."""
    return page.evaluate(
        """() => Math.max(
            document.documentElement.scrollWidth - window.innerWidth,
            ...[...document.querySelectorAll("table")].map(
                (table) => table.offsetWidth - table.parentElement.clientWidth))"""
    )
