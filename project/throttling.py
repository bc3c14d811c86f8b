"""API throttles: one Redis round trip per request, and open when Redis is down.

DRF's cache-based throttles keep a pickled list of timestamps per client and read and write it
through the cache on every request (two round trips, plus pickling a list as long as the rate).
On the order-create path that was most of a millisecond of a 6.5 ms request. A fixed-window
counter (INCR + EXPIRE in one pipeline) costs one round trip; the price is that a client can
spend its budget at the end of one window and again at the start of the next, so a burst can
reach twice the rate for a moment. That is fine for protecting the API; the payment provider's
budget is kept exactly by project/ratelimit.py, not here.

When Redis is unreachable the request is let through and the reason logged: an order must still
be accepted (the outbox keeps it until the broker is back), never answered 500. Logins do not
depend on this: their lockout (django-axes, settings) counts failures in the database.

Every throttle, and the login lockout, names a client by `client_address`: DRF's rule with
NUM_PROXIES, so X-Forwarded-For counts only as far as our own proxies wrote it.
"""

import logging
import time

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle

from project.redis_client import get_redis

logger = logging.getLogger(__name__)


_IDENT = BaseThrottle()


def client_address(request) -> str | None:
    """The client's address: REMOTE_ADDR, or the entry our NUM_PROXIES proxies appended to
    X-Forwarded-For (entries further left are the client's own to forge)."""
    return _IDENT.get_ident(request)


def throttle_key_prefix() -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:throttle:"


def fixed_window_hit(key: str, *, limit: int, duration: int) -> tuple[bool, float]:
    """Count one request against `key`; (allowed, seconds until the window ends).

    Raises redis.RedisError when the counter is unreachable: the caller decides what that means.
    """
    now = time.time()
    window = int(now // duration)
    window_key = f"{throttle_key_prefix()}{key}:{window}"
    with get_redis().pipeline(transaction=False) as pipe:
        pipe.incr(window_key)
        pipe.expire(window_key, duration + 1)
        count, _ = pipe.execute()
    return count <= limit, (window + 1) * duration - now


class FailOpenScopedRateThrottle(ScopedRateThrottle):
    """DRF's ScopedRateThrottle (per user, or per IP when anonymous; rates from settings) with a
    fixed-window counter in Redis."""

    def allow_request(self, request, view) -> bool:
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        try:
            allowed, self._wait = fixed_window_hit(
                self.key, limit=self.num_requests, duration=self.duration
            )
        except redis.RedisError as exc:
            logger.warning(
                "throttle counter unavailable, request allowed",
                extra={"scope": self.scope, "error": repr(exc)},
            )
            return True
        return allowed

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)
