import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orders.models import Product
from orders.provider.sandbox import SandboxProvider
from project.celery import app as celery_app
from project.ratelimit import provider_limiter

QUEUES = ["orders", "provider", "notifications"]


def wait_for(predicate: Callable[[], object], *, timeout: float = 30.0, interval: float = 0.05):
    """Poll until predicate() is truthy; fail the test with what it last saw."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


@pytest.fixture(scope="session")
def sandbox_server():
    provider = SandboxProvider(rate_limit=2, window=1.0).start()
    yield provider
    provider.stop()


@pytest.fixture
def sandbox(sandbox_server, settings):
    """The sandbox provider (a real HTTP server), clean for each test, wired into settings."""
    sandbox_server.reset()
    settings.PAYMENT_PROVIDER_URL = sandbox_server.url
    return sandbox_server


def _clear_run_keys(client: redis.Redis) -> None:
    """Remove this run's broker keys (other runs may share the Redis database)."""
    keys = list(client.scan_iter(match=f"{django_settings.BROKER_KEY_PREFIX}*", count=500))
    if keys:
        client.delete(*keys)
    limiter = provider_limiter()  # keyed by this run's provider API key
    if limiter is not None:
        limiter.reset()


@pytest.fixture(scope="session")
def sandbox_fast_server():
    """A provider with no rate limit: for tests about volume, not pacing."""
    provider = SandboxProvider(rate_limit=0).start()
    yield provider
    provider.stop()


@pytest.fixture
def sandbox_fast(sandbox_fast_server, settings):
    sandbox_fast_server.reset()
    settings.PAYMENT_PROVIDER_URL = sandbox_fast_server.url
    settings.PAYMENT_PROVIDER_CLUSTER_RATE_LIMIT = False
    return sandbox_fast_server


@pytest.fixture
def provider_tasks_unthrottled(celery_worker):
    """Lift Celery's per-worker rate_limit on the provider tasks (volume tests only)."""
    names = ["orders.authorize_payment", "orders.confirm_order"]
    for name in names:
        celery_app.control.rate_limit(name, "0", reply=True, timeout=5, limit=1)
    yield
    for name in names:
        celery_app.control.rate_limit(
            name, django_settings.PAYMENT_PROVIDER_RATE_LIMIT, reply=True, timeout=5, limit=1
        )


@pytest.fixture
def broker_redis():
    """The broker, emptied of this run's messages before and after the test."""
    if not django_settings.CELERY_BROKER_URL.startswith("redis"):  # RabbitMQ: purge queues
        celery_app.control.purge()
        yield None
        celery_app.control.purge()
        return
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    _clear_run_keys(client)
    yield client
    _clear_run_keys(client)


@pytest.fixture
def celery_worker(transactional_db, broker_redis, sandbox):
    """A real Celery worker (threads) consuming every queue of the real Redis broker."""
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        loglevel="WARNING",
        queues=QUEUES,
        shutdown_timeout=30,
        without_heartbeat=True,
    ) as worker:
        yield worker


@pytest.fixture
def catalog(db) -> dict[str, Product]:
    products = [
        Product(sku="BOOK-1", name="A book", price=Decimal("12.50"), currency="EUR", stock=100),
        Product(sku="MUG-1", name="A mug", price=Decimal("8.00"), currency="EUR", stock=50),
        Product(sku="PEN-1", name="A pen", price=Decimal("1.20"), currency="EUR", stock=3),
    ]
    Product.objects.bulk_create(products)
    return {product.sku: Product.objects.get(sku=product.sku) for product in products}


@pytest.fixture
def customer(django_user_model):
    return django_user_model.objects.create_user(
        username="alice", password="alice-password", email="alice@example.com"
    )


@pytest.fixture
def other_customer(django_user_model):
    return django_user_model.objects.create_user(
        username="bob", password="bob-password", email="bob@example.com"
    )


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="staff-password", is_staff=True
    )


def client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(customer) -> APIClient:
    return client_for(customer)
