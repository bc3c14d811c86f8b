"""Throttles that fail open: the rate limit protects the API, it must not take it down.

DRF reads its counters from the cache, which is Redis. When that Redis is down, an order must
still be accepted (the outbox keeps it until the broker is back), so an unreachable cache lets the
request through and logs why instead of answering 500.
"""

import logging

from rest_framework.throttling import ScopedRateThrottle

logger = logging.getLogger(__name__)


class FailOpenScopedRateThrottle(ScopedRateThrottle):
    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # the cache backend's own errors (redis, connection refused ...)
            logger.warning(
                "throttle cache unavailable, request allowed",
                extra={"scope": self.scope, "error": repr(exc)},
            )
            return True
