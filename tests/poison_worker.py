"""Loaded into a real worker (`--include tests.poison_worker`) by the poison-message test: the
service named by POISON_SERVICE kills its own pool child with SIGKILL on every call, as a
segfault or the OOM killer would, after counting the death in Redis (POISON_COUNTER_KEY)."""

import os
import signal

import redis

from orders import services

_target = os.environ["POISON_SERVICE"]
_counter = os.environ["POISON_COUNTER_KEY"]


def _die(**_kwargs):
    redis.Redis.from_url(os.environ["REDIS_URL"]).incr(_counter)
    os.kill(os.getpid(), signal.SIGKILL)


setattr(services, _target, _die)
