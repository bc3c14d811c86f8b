"""One Redis client per process for locks, rate limits and pub/sub (REDIS_URL)."""

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client_for(url: str) -> redis.Redis:
    # redis-py's pool notices a fork and reconnects in the child, so prefork workers can share it.
    return redis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
    )


def get_redis() -> redis.Redis:
    return _client_for(settings.REDIS_URL)
