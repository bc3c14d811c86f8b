"""GET /healthz: 200 only when the database and the broker answer.

Also reported, as information that does not change the status code: how many workers answered a
ping within a short timeout, and the provider rate limiter's pace and waiting calls.
"""

from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

WORKER_PING_TIMEOUT = 0.5


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"


def _check_broker() -> str:
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"


def _live_workers() -> int | None:
    try:
        return len(current_app.control.ping(timeout=WORKER_PING_TIMEOUT) or [])
    except Exception:
        return None


def _provider_rate_limit() -> dict | str:
    from project.ratelimit import provider_limiter

    try:
        limiter = provider_limiter()
        if limiter is None:
            return "off"
        state = limiter.state()
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"
    return {"rate": settings.PAYMENT_PROVIDER_RATE_LIMIT, **state}


def healthz(request):
    checks = {"database": _check_database(), "broker": _check_broker()}
    healthy = all(value == "ok" for value in checks.values())
    body = {
        **checks,
        "workers": _live_workers() if checks["broker"] == "ok" else None,
        "provider_rate_limit": _provider_rate_limit(),
    }
    return JsonResponse(body, status=200 if healthy else 503)
