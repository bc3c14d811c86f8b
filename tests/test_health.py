"""/healthz stays cheap: the worker ping is shared through Redis, and each address is throttled."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client

from project import health
from project.redis_client import get_redis
from tests.test_security import clear_throttle_counters


@pytest.fixture
def fresh_health():
    """No stored worker count, no ping lock, no throttle counters from an earlier test."""

    def clear():
        get_redis().delete(health._key(health._WORKERS_KEY), health._key(health._PING_LOCK_KEY))
        clear_throttle_counters()
        health._local_count = (float("-inf"), None)

    clear()
    yield
    clear()


def burst(count: int, *, threads: int = 10) -> list:
    # One address, as an anonymous load balancer or attacker would be.
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: Client().get("/healthz"), range(count)))


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_burst_of_fifty_requests_pings_the_workers_once(fresh_health, celery_worker, settings):
    settings.HEALTHZ_WORKER_PING_INTERVAL = 300  # the burst fits in it even on a loaded machine
    before = health.worker_pings_sent.value
    responses = burst(50)
    assert health.worker_pings_sent.value - before == 1
    assert [response.status_code for response in responses] == [200] * 50
    # Answered from the cache: the one ping's count (or "not known yet" while it ran).
    assert {response.json()["workers"] for response in responses} <= {1, None}
    assert Client().get("/healthz").json()["workers"] == 1


SECOND_PROCESS = """
import django
django.setup()
from project import health
print(health.live_workers(), health.worker_pings_sent.value)
"""


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_second_process_answers_from_the_count_the_first_one_stored(
    fresh_health, celery_worker, settings
):
    # An interval longer than a loaded machine takes to start a second Django process.
    settings.HEALTHZ_WORKER_PING_INTERVAL = 300
    assert Client().get("/healthz").json()["workers"] == 1
    second = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "HEALTHZ_WORKER_PING_INTERVAL": "300",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The worker count, and not one ping of its own.
    assert second.stdout.split()[-2:] == ["1", "0"], second.stderr[-2000:]


@pytest.mark.django_db(transaction=True)
def test_the_ping_runs_again_after_its_interval(fresh_health, settings):
    settings.HEALTHZ_WORKER_PING_INTERVAL = 0.2
    before = health.worker_pings_sent.value
    Client().get("/healthz")
    get_redis().delete(health._key(health._PING_LOCK_KEY))  # as the lock's expiry would
    Client().get("/healthz")
    assert health.worker_pings_sent.value - before == 2


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_each_process_pings_at_most_once_per_interval(fresh_health, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.HEALTHZ_WORKER_PING_INTERVAL = 300
    before = health.worker_pings_sent.value
    responses = burst(20)
    assert health.worker_pings_sent.value - before == 1
    assert {response.status_code for response in responses} == {200}  # throttle open, broker ok


@pytest.mark.django_db
def test_healthz_is_throttled_per_address(fresh_health, settings):
    settings.HEALTHZ_THROTTLE_RATE = "5/day"
    codes = [
        Client().get("/healthz", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code for n in range(7)
    ]
    assert codes == [200] * 5 + [429] * 2
    throttled = Client().get("/healthz")
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert "detail" in throttled.json()
    assert Client().get("/healthz", REMOTE_ADDR="198.51.100.3").status_code == 200


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_healthz_reports_database_broker_workers_and_the_limiter(
    fresh_health, client, celery_worker
):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["database"], body["broker"]) == ("ok", "ok")
    assert body["workers"] >= 1
    assert body["provider_rate_limit"]["limit"] == 2


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_down(fresh_health, client, monkeypatch):
    monkeypatch.setattr(health, "check_broker", lambda: "error: OperationalError")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"].startswith("error")
