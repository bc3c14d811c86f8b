"""Poison messages: count the deliveries of a message that started and never finished.

A task that kills its worker (a segfault, the OOM killer, a hard time limit) is redelivered by
`acks_late` + `reject_on_worker_lost`, at once and forever. Each delivery increments a counter in
Redis before the task body runs and deletes it when the body returns or raises; a counter still
standing at the next delivery means the last one died with its worker. Keyed by task id and
retry number (a retry is a new message), it works the same on Redis and RabbitMQ brokers.
"""

import logging

from django.conf import settings

from project.redis_client import get_redis

logger = logging.getLogger(__name__)

TTL_SECONDS = 24 * 3600


def _key(task_id: str, retries: int) -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    return f"{prefix}:deliveries:{task_id}:{retries}"


def delivery_started(*, task_id: str, retries: int) -> int:
    """This delivery's number among those that never finished (1 for a healthy message); 0 when
    Redis cannot say (the message runs: counting is a guard, not a gate)."""
    key = _key(task_id, retries)
    try:
        with get_redis().pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, TTL_SECONDS)
            count, _ = pipe.execute()
    except Exception as exc:
        logger.warning("delivery counter unavailable", extra={"error": repr(exc)})
        return 0
    return int(count)


def delivery_finished(*, task_id: str, retries: int) -> None:
    try:
        get_redis().delete(_key(task_id, retries))
    except Exception as exc:
        logger.warning("delivery counter not cleared", extra={"error": repr(exc)})
