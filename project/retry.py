"""Retry arithmetic shared by the pipeline's tasks and the webhook deliveries.

One place for: exponential backoff with equal jitter, the cap that keeps a countdown under the
broker's visibility timeout, and reading a `Retry-After` header (seconds or an HTTP date).
"""

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from django.conf import settings


def backoff_with_jitter(*, attempt: int, base: float, cap: float) -> float:
    """Seconds before retry `attempt` (0-based): `base * 2^attempt`, capped, with equal jitter.

    Half the ceiling is fixed (never retry at once), half random (spread a thundering herd).
    """
    ceiling = min(cap, base * (2 ** max(attempt, 0)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def visibility_timeout() -> float:
    """Seconds after which Redis hands an unacknowledged message to another worker."""
    return float(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600))


def max_countdown() -> float:
    """The longest countdown or ETA a message may carry without being delivered twice.

    Redis restores a message held unacknowledged for the visibility timeout, and a message
    waiting on its ETA is held exactly so; half the timeout leaves room for the time limit.
    """
    return settings.CELERY_MAX_COUNTDOWN


def cap_countdown(seconds: float) -> float:
    return max(0.0, min(float(seconds), max_countdown()))


def parse_retry_after(value: str | None, *, default: float | None = None) -> float | None:
    """`Retry-After` as seconds from now (delta-seconds or an HTTP date); `default` if unusable."""
    if value is None or not str(value).strip():
        return default
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return default
    if seconds != seconds:  # NaN
        return default
    return max(seconds, 0.0)
