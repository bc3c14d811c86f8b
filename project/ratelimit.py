"""Cluster-wide rate limiter for the payment provider, shared by every worker through Redis.

Celery's ``rate_limit`` is per worker; the provider counts per API key across all of them and
answers 429 once a rolling window holds more than ``limit`` requests.

Algorithm: sliding log with reservation. For each API key Redis keeps the ascending list of
granted slot times (microseconds, Redis clock) that can still matter. One Lua script per
reservation reads ``TIME`` (never the caller's clock, which may be skewed), computes the earliest
slot ``t >= now`` whose window holds fewer than ``limit`` slots, i.e.
``t = max(now, slots[-limit] + window + margin)``, appends it and returns it; the caller sleeps
until ``t``. Any ``limit + 1`` consecutive slots are therefore at least ``window + margin`` apart,
which is exactly "no rolling window holds more than ``limit``". Why this and not a GCRA/token
bucket:

* exact rolling-window guarantee: a GCRA with burst > 1 lets ``limit + 1`` requests into some
  window at start-up (the burst plus the first emission), which the provider answers with 429;
* full use of the budget: a burst of ``limit`` goes out at once, then ``limit`` per window, with
  no idle gaps (a GCRA with burst 1 would space every request by ``window / limit``);
* FIFO fairness: slots are handed out in reservation order, so no caller starves while others
  keep polling;
* small state: the log only holds slots newer than one window plus pending reservations, i.e.
  O(limit) plus the callers currently waiting (bounded by ``max_wait``).

``margin`` widens the window the limiter enforces: a request leaves after its slot (return trip
from Redis, sleep overshoot, network), and uneven delays could otherwise put ``limit + 1``
arrivals into one of the provider's windows. The throughput cost is ``margin / window``. The margin
must exceed the spread of grant-to-arrival delays; on 2 busy cores 20 ms was too little and the
40 ms default gave no 429 in any measured run (bench/README.md). Raise it for thread or gevent
pools, where a reply can wait for the GIL or the event loop.

``max_wait`` makes check-and-reserve atomic: a slot further away than ``max_wait`` is not
recorded, so a Celery task can retry with ``countdown=reservation.wait`` instead of holding a
slot (and a worker) for a long sleep.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass

import redis

_MICRO = 1_000_000

# Shared by both scripts so the operator view and the reservations agree on the next slot.
# Slot log invariant: ascending, and holds every slot newer than now - span. Older slots can never
# constrain a future reservation (slot + span <= now), so dropping them keeps the answer exact.
_LUA_NEXT_SLOT = """
local function redis_now()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end

local function next_slot(key, limit, span, now)
  local slot = now
  local len = redis.call('LLEN', key)
  if len == 0 then
    return slot
  end
  -- Never before the newest slot: keeps the log sorted (FIFO) if the server clock steps back.
  local newest = tonumber(redis.call('LINDEX', key, -1))
  if newest > slot then
    slot = newest
  end
  if len >= limit then
    local bound = tonumber(redis.call('LINDEX', key, -limit)) + span
    if bound > slot then
      slot = bound
    end
  end
  return slot
end
"""

# KEYS[1] slot log; ARGV: limit, span_us (window + margin), max_wait_us (-1 = unbounded).
# Returns {granted (1/0), wait_us, slot_us}.
_LUA_RESERVE = (
    _LUA_NEXT_SLOT
    + """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local now = redis_now()

-- Drop slots that can no longer constrain anything (amortised O(1): each is popped once).
local horizon = now - span
while true do
  local head = redis.call('LINDEX', key, 0)
  if not head or tonumber(head) > horizon then
    break
  end
  redis.call('LPOP', key)
end

local slot = next_slot(key, limit, span, now)
local wait = slot - now
if max_wait >= 0 and wait > max_wait then
  return {0, wait, slot}
end
redis.call('RPUSH', key, string.format('%d', slot))
-- Once the newest slot is older than span the whole log is irrelevant; let Redis drop it.
redis.call('PEXPIRE', key, math.ceil((wait + span) / 1000) + 1)
return {1, wait, slot}
"""
)

# KEYS[1] slot log; ARGV: limit, span_us, window_us.
# Returns {recent slots in (now - window, now], next free slot - now, slots after now}.
_LUA_STATE = (
    _LUA_NEXT_SLOT
    + """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local now = redis_now()
local recent, waiting = 0, 0
for _, raw in ipairs(redis.call('LRANGE', key, 0, -1)) do
  local slot = tonumber(raw)
  if slot > now then
    waiting = waiting + 1
  elseif slot > now - window then
    recent = recent + 1
  end
end
return {recent, next_slot(key, limit, span, now) - now, waiting}
"""
)

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_rate(rate: str) -> tuple[int, float]:
    """Parse "2/s", "10/m", "120/h", "1/d" or "5/2s" into (limit, window seconds)."""
    match = _RATE_RE.match(rate) if isinstance(rate, str) else None
    if match is None:
        raise ValueError(f"invalid rate {rate!r}; expected e.g. '2/s', '10/m', '5/2s'")
    limit = int(match.group(1))
    multiplier = float(match.group(2)) if match.group(2) else 1.0
    window = multiplier * _UNIT_SECONDS[match.group(3)]
    if limit < 1 or window <= 0:
        raise ValueError(f"invalid rate {rate!r}; limit and window must be positive")
    return limit, window


@dataclass(frozen=True)
class Reservation:
    granted: bool
    wait: float  # seconds from the reservation until the slot; 0.0 if immediate
    slot_time: float  # Redis clock, seconds since the epoch


class RateLimitExceeded(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limit reached; next slot in {wait:.3f}s")
        self.wait = wait


class SlidingWindowLimiter:
    """At most ``limit`` calls per rolling ``window`` (+ ``margin``) for one API key."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        limit: int,
        window: float = 1.0,
        margin: float = 0.02,
        namespace: str = "orderflow:ratelimit",
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if window <= 0 or margin < 0:
            raise ValueError("window must be > 0 and margin >= 0")
        self.limit = limit
        self.window = window
        self.margin = margin
        # Only a digest reaches Redis, so the API key never shows up in KEYS/MONITOR/backups.
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.redis_key = f"{namespace}:{digest}"
        self._window_us = round(window * _MICRO)
        self._span_us = round((window + margin) * _MICRO)
        self._reserve = client.register_script(_LUA_RESERVE)
        self._state = client.register_script(_LUA_STATE)
        self._client = client

    def reserve(self, max_wait: float | None = None) -> Reservation:
        """Atomically book the next slot; refuse without booking if it is > max_wait away."""
        max_wait_us = -1 if max_wait is None else max(0, math.floor(max_wait * _MICRO))
        granted, wait_us, slot_us = self._reserve(
            keys=[self.redis_key], args=[self.limit, self._span_us, max_wait_us]
        )
        return Reservation(
            granted=bool(granted), wait=int(wait_us) / _MICRO, slot_time=int(slot_us) / _MICRO
        )

    def acquire(self, max_wait: float | None = None) -> Reservation:
        """Reserve and, if granted, sleep until the slot."""
        reservation = self.reserve(max_wait)
        if reservation.granted and reservation.wait > 0:
            time.sleep(reservation.wait)
        return reservation

    def acquire_or_raise(self, max_wait: float) -> Reservation:
        """Like acquire(), but raise RateLimitExceeded (with .wait) instead of a long sleep."""
        reservation = self.acquire(max_wait)
        if not reservation.granted:
            raise RateLimitExceeded(reservation.wait)
        return reservation

    def state(self) -> dict[str, int | float]:
        """Snapshot for operators, consistent with what reserve() would do right now."""
        recent, next_free_us, waiting = self._state(
            keys=[self.redis_key], args=[self.limit, self._span_us, self._window_us]
        )
        return {
            "limit": self.limit,
            "window": self.window,
            "margin": self.margin,
            "recent_slots": int(recent),
            "next_free_in": int(next_free_us) / _MICRO,
            "waiting": int(waiting),
        }

    def reset(self) -> None:
        self._client.delete(self.redis_key)


def limiter_for(api_key: str, rate: str, client: redis.Redis) -> SlidingWindowLimiter:
    limit, window = parse_rate(rate)
    return SlidingWindowLimiter(client, api_key, limit, window)


def provider_limiter() -> SlidingWindowLimiter | None:
    """The limiter every provider call goes through (None when switched off for a baseline)."""
    from django.conf import settings

    from project.redis_client import get_redis

    if not settings.PAYMENT_PROVIDER_CLUSTER_RATE_LIMIT:
        return None
    limit, window = parse_rate(settings.PAYMENT_PROVIDER_RATE_LIMIT)
    return SlidingWindowLimiter(
        get_redis(),
        settings.PAYMENT_PROVIDER_API_KEY,
        limit,
        window,
        margin=settings.PAYMENT_PROVIDER_RATE_MARGIN,
    )
