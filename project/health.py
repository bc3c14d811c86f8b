"""GET /healthz: 200 only when the database and the broker answer.

Also reported, as information that does not change the status code: how many workers answered a
ping within a short timeout, the provider rate limiter's pace and waiting calls, and what the
apps register (orders: the last reconciliation with the provider).

The endpoint is unauthenticated, so it must stay cheap: the worker ping is a broadcast that
waits half a second for answers, and is run at most once per HEALTHZ_WORKER_PING_INTERVAL for the
whole cluster (whoever takes the interval's Redis lock pings and stores the count; everyone else
answers the stored count). Each client address is held to HEALTHZ_THROTTLE_RATE.
"""

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable

import redis
from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from rest_framework.throttling import SimpleRateThrottle

from project.ratelimit import provider_limiter
from project.redis_client import get_redis
from project.throttling import client_address, fixed_window_hit

logger = logging.getLogger(__name__)

# Details the apps add to the body (registered in their AppConfig.ready): name -> reader.
_details: dict[str, Callable[[], object]] = {}


def register_detail(name: str, reader: Callable[[], object]) -> None:
    """Show `reader()` under `name` in /healthz (information only: never changes the status)."""
    _details[name] = reader


def app_details() -> dict:
    details = {}
    for name, reader in _details.items():
        try:
            details[name] = reader()
        except Exception as exc:
            details[name] = f"error: {exc.__class__.__name__}"
    return details


WORKER_PING_TIMEOUT = 0.5
_WORKERS_KEY = "healthz:workers"
_PING_LOCK_KEY = "healthz:workers:lock"


class _PingCounter:
    """Worker pings broadcast by this process (what /healthz must keep rare)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def increment(self) -> None:
        with self._lock:
            self.value += 1


worker_pings_sent = _PingCounter()
# Used only while Redis is down: one ping per interval per process instead of per cluster.
_local_lock = threading.Lock()
_local_count: tuple[float, int | None] = (float("-inf"), None)


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"


def check_broker() -> str:
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"


def _ping_workers() -> int | None:
    worker_pings_sent.increment()
    try:
        return len(current_app.control.ping(timeout=WORKER_PING_TIMEOUT) or [])
    except Exception:
        return None


def _key(name: str) -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:{name}"


def _live_workers_locally(interval: float) -> int | None:
    global _local_count
    with _local_lock:
        checked_at, count = _local_count
        if time.monotonic() - checked_at >= interval:
            count = _ping_workers()
            _local_count = (time.monotonic(), count)
        return count


def live_workers() -> int | None:
    """Workers that answered the last ping: pinged now if this request took the interval's lock,
    else the count stored by whoever did (None until a first ping has answered)."""
    interval = settings.HEALTHZ_WORKER_PING_INTERVAL
    client = get_redis()
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.set(_key(_PING_LOCK_KEY), 1, nx=True, px=max(1, int(interval * 1000)))
            pipe.get(_key(_WORKERS_KEY))
            took_lock, stored = pipe.execute()
    except redis.RedisError:
        return _live_workers_locally(interval)
    if not took_lock:
        return json.loads(stored) if stored is not None else None
    count = _ping_workers()
    with contextlib.suppress(redis.RedisError):  # the next interval's winner stores it
        client.set(_key(_WORKERS_KEY), json.dumps(count), ex=max(60, int(interval * 10)))
    return count


def _retry_after(request) -> float | None:
    """Seconds the client must wait, or None when this request is within its rate."""
    # DRF's rate syntax ("60/min"); parse_rate reads nothing from its instance.
    limit, duration = SimpleRateThrottle.parse_rate(None, settings.HEALTHZ_THROTTLE_RATE or None)
    if limit is None:
        return None
    try:
        allowed, wait = fixed_window_hit(
            f"healthz:{client_address(request)}", limit=limit, duration=duration
        )
    except redis.RedisError as exc:
        # A probe must still tell a Redis outage from a dead database: let it through.
        logger.warning("healthz throttle unavailable", extra={"error": repr(exc)})
        return None
    return None if allowed else wait


def provider_rate_limit() -> dict | str:
    try:
        limiter = provider_limiter()
        if limiter is None:
            return "off"
        state = limiter.state()
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"
    return {"rate": settings.PAYMENT_PROVIDER_RATE_LIMIT, **state}


def healthz(request):
    retry_after = _retry_after(request)
    if retry_after is not None:
        response = JsonResponse({"detail": "Too many requests; see Retry-After."}, status=429)
        response["Retry-After"] = str(max(1, round(retry_after)))
        return response
    checks = {"database": check_database(), "broker": check_broker()}
    healthy = all(value == "ok" for value in checks.values())
    body = {
        **checks,
        "workers": live_workers() if checks["broker"] == "ok" else None,
        "provider_rate_limit": provider_rate_limit(),
        **app_details(),
    }
    return JsonResponse(body, status=200 if healthy else 503)
