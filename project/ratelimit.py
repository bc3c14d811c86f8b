"""Cluster-wide rate limiter for the payment provider, shared by every worker through Redis.

Celery's ``rate_limit`` is per worker; the provider counts per API key across all of them and
answers 429 once a rolling window holds more than ``limit`` requests.

**The pace: a sliding log with reservation.** For each API key Redis keeps the ascending list of
granted slot times (microseconds, Redis clock) that can still matter. One Lua script per grant
reads ``TIME`` (never the caller's clock, which may be skewed), computes the earliest slot
``t >= now`` whose window holds fewer than ``limit`` slots, i.e.
``t = max(now, newest, hold, slots[-limit] + window + extra(slots[-limit]))``, appends it and
returns it; the caller sleeps until ``t``. Any ``limit + 1`` consecutive slots are therefore at
least ``window + extra`` apart, which is exactly "no rolling window holds more than ``limit``".
Why this and not a GCRA/token bucket:

* exact rolling-window guarantee: a GCRA with burst > 1 lets ``limit + 1`` requests into some
  window at start-up (the burst plus the first emission), which the provider answers with 429;
* full use of the budget: a burst of ``limit`` goes out at once, then ``limit`` per window, with
  no idle gaps (a GCRA with burst 1 would space every request by ``window / limit``);
* small state: the log only holds slots newer than one window (+ extra) plus booked slots.

**Who gets the next slot: two algorithms** (``PAYMENT_PROVIDER_LIMITER``).

``fifo`` (:meth:`SlidingWindowLimiter.reserve`, the algorithm before fair share): whoever asks
gets the next free slot if it is within ``max_wait``, else is refused without booking and comes
back later. With a 500-order batch in flight every other customer queues behind it.

``fair`` (:class:`FairLimiter`, the default): start-time fair queuing over per-customer lanes.
A waiting call registers a *ticket* (its idempotency key, so a re-scheduled task keeps its
place) at the tail of its customer's lane; each customer has two FIFO lanes, ``single`` served
before ``batch``. Customers with tickets sit in a sorted set by a virtual start tag: the next
slot goes to the customer with the smallest tag, and serving it moves its tag to
``max(tag, V) + 1 / weight`` where ``V`` is the tag of the last customer served; a customer that
arrives starts at ``V``. So every customer with waiting calls gets slots in proportion to its
weight (an equal share by default), round by round, and no customer can bank credit while it
has nothing to send (``max(tag, V)``). Why this rather than deficit round robin: every call costs
the same (one request), so DRR with quantum = weight and SFQ give the same order, and tags need
one sorted set instead of a rotating list plus deficit counters; newcomers and the tie-breaks
fall out of the arithmetic. A customer ahead in line cannot starve: it is served within one
round of every other customer, whatever their backlog.

Fairness must cost no idle slot, and callers are Celery tasks that come and go, so a ticket only
*holds* a slot while its caller is present: a caller whose turn is near (``<= max_wait``) polls
in place (the script tells it how long to sleep, at most ``lookahead / 2``, and marks it present
until then plus ``presence``); a caller further back is told its estimated turn (its rank in the
fair order, computed from the tags, times the pace), re-schedules its task for shortly before
then and is marked absent. The next slot goes to the first *present* ticket in fair order; an
absent ticket keeps its place in its lane (FIFO among the callers ready to send) but does not
hold the slot, and a ticket whose caller is neither back nor polling by its deadline (estimated
turn + ``ticket_grace``) expires, so a dead caller never blocks a lane. A slot is booked only
``lookahead`` ahead (not ``max_wait``): a newcomer then waits at most about one pair of slots
plus the lookahead, not behind seconds of booked slots. When only one customer has work, all
its present tickets are first in line and it gets every slot.

**Robust over a real network: ``extra`` is learnt per slot** (``adaptive``). A slot is on Redis's
clock; the provider counts arrivals. Request ``k`` arrives at ``slot + late_k + out_k``
(``late``: sleep overshoot and local delays; ``out``: one-way network delay), so slots ``k`` and
``k + limit`` stay a window apart at the provider when ``extra(k) >= late_k + out_k -
min(out)``. The caller cannot see ``out_k`` but measures ``late_k`` and the round trip ``rtt_k
>= out_k + min(back)``, so ``late_k + rtt_k - min(rtt)`` bounds what request ``k`` needs
(:meth:`observe`); the slot ``limit`` places later uses that bound. A fixed margin has to cover
the worst spread all the time; this pays each request's own delay, and its responses have
normally arrived by the time the slot a window later is booked (the lookahead is short); until
then the larger of the 90th percentile of recent bounds and the time it has been out stands in.
``margin`` stays the minimum (it covers what a round trip cannot show, e.g. the minimum's own
noise). When the provider still answers
429, :meth:`penalize` holds every slot until its ``Retry-After`` and adds 10 ms to every extra,
an addition that halves every five minutes.

Keys (all under ``<namespace>:<sha256(api key)[:16]>``, so the API key never reaches Redis):
the slot log (a list, the key itself), and with the fair algorithm ``:customers`` (sorted set),
``:vt``, ``:weights``, ``:tickets`` (hash), ``:lane:<single|batch>:<customer>`` (lists); with
``adaptive`` ``:seq``, ``:extra`` (hash, one entry per slot in the log), ``:fastest``,
``:extras``, ``:floor``; ``:hold`` after a 429; ``:grants`` (the last ``grant_log`` grants, for
tests and operators). They are computed inside the scripts, so the limiter needs one Redis (not
a cluster).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from dataclasses import dataclass, field

import redis
from django.conf import settings

from project.redis_client import get_redis

_MICRO = 1_000_000
LANES = ("single", "batch")
ALGORITHMS = ("fair", "fifo")
AUX_TTL_MS = 600_000  # state beside the log lives 10 min after its last use
FLOOR_STEP_US = 10_000  # a 429 raises the extra's floor by 10 ms ...
FLOOR_HALF_LIFE_US = 300 * _MICRO  # ... which halves every 5 minutes

# Shared by every script. Log entries are "slot_us" or, with adaptive extra, "slot_us:grant".
_LUA_COMMON = """
local P = KEYS[1]
local function redis_now()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local function entry_slot(raw)
  return tonumber(string.match(raw, '^(%d+)'))
end
local function entry_grant(raw)
  return string.match(raw, ':(%d+)$')
end
local function touch(key)
  redis.call('PEXPIRE', key, 600000)
end
-- The floor learnt from 429s, decayed to now.
local function floor_now(now)
  local raw = redis.call('GET', P .. ':floor')
  if not raw then return 0 end
  local value, at = string.match(raw, '^(%d+) (%d+)$')
  return math.floor(tonumber(value) * math.pow(0.5, (now - tonumber(at)) / 300000000))
end
-- 90th percentile of the recent per-request bounds: stands in for a request not answered yet.
local function pending_extra()
  local values = redis.call('LRANGE', P .. ':extras', 0, -1)
  if #values == 0 then return 0 end
  local sorted = {}
  for i, v in ipairs(values) do sorted[i] = tonumber(v) end
  table.sort(sorted)
  return sorted[math.max(1, math.ceil(#sorted * 0.9))]
end
-- cfg: limit, window, margin, adaptive (0/1), max_extra; memo caches per-script lookups.
local function extra_of(raw, cfg, memo, now)
  if cfg.adaptive == 0 then return cfg.margin end
  if memo.floor == nil then memo.floor = floor_now(now) end
  local grant = entry_grant(raw)
  local observed = grant and redis.call('HGET', P .. ':extra', grant)
  local value
  if observed then
    value = tonumber(observed)
  else
    -- Not answered yet: typical of late, and at least as late as it has been out so far.
    if memo.pending == nil then memo.pending = pending_extra() end
    value = memo.pending
    if grant then value = math.max(value, now - entry_slot(raw)) end
  end
  return math.max(cfg.margin, math.min(value, cfg.max_extra)) + memo.floor
end
-- Drop slots that can no longer constrain anything (amortised O(1): each is popped once).
local function trim(cfg, now)
  local horizon = now - cfg.window - math.max(cfg.margin, cfg.max_extra * cfg.adaptive)
  while true do
    local head = redis.call('LINDEX', P, 0)
    if not head or entry_slot(head) > horizon then break end
    redis.call('LPOP', P)
    local grant = entry_grant(head)
    if grant then redis.call('HDEL', P .. ':extra', grant) end
  end
end
local function next_slot(cfg, memo, now)
  local slot = now
  local hold = tonumber(redis.call('GET', P .. ':hold') or '0')
  if hold > slot then slot = hold end
  local len = redis.call('LLEN', P)
  if len == 0 then return slot end
  -- Never before the newest slot: keeps the log sorted if the server clock steps back.
  local newest = entry_slot(redis.call('LINDEX', P, -1))
  if newest > slot then slot = newest end
  if len >= cfg.limit then
    local raw = redis.call('LINDEX', P, -cfg.limit)
    local bound = entry_slot(raw) + cfg.window + extra_of(raw, cfg, memo, now)
    if bound > slot then slot = bound end
  end
  return slot
end
-- The slots the next grants would get, in order: the first, and how many are within horizon.
local function free_slots(cfg, memo, now, horizon)
  local tail = {}
  for _, raw in ipairs(redis.call('LRANGE', P, -cfg.limit, -1)) do
    tail[#tail + 1] = {entry_slot(raw), extra_of(raw, cfg, memo, now)}
  end
  local hold = tonumber(redis.call('GET', P .. ':hold') or '0')
  local first, count = nil, 0
  while count < cfg.limit do
    local slot = math.max(now, hold)
    if #tail > 0 then slot = math.max(slot, tail[#tail][1]) end
    if #tail >= cfg.limit then
      local bound = tail[#tail - cfg.limit + 1]
      slot = math.max(slot, bound[1] + cfg.window + bound[2])
    end
    if first == nil then first = slot end
    if slot - now > horizon then break end
    count = count + 1
    tail[#tail + 1] = {slot, extra_of('0', cfg, memo, now)}  -- no grant: typical extra
  end
  return first, count
end
local function book(cfg, slot, wait, customer, lane, ticket, grant_log)
  local entry = string.format('%d', slot)
  local grant = ''
  if cfg.adaptive == 1 then
    grant = tostring(redis.call('INCR', P .. ':seq'))
    touch(P .. ':seq')
    entry = entry .. ':' .. grant
  end
  redis.call('RPUSH', P, entry)
  -- Once the newest slot is older than the horizon the whole log is irrelevant.
  local span = cfg.window + math.max(cfg.margin, cfg.max_extra * cfg.adaptive)
  redis.call('PEXPIRE', P, math.ceil((wait + span) / 1000) + 1)
  if grant_log > 0 then
    redis.call('RPUSH', P .. ':grants', table.concat({entry, lane, ticket, customer}, ' '))
    redis.call('LTRIM', P .. ':grants', -grant_log, -1)
    touch(P .. ':grants')
  end
  return grant
end
local function config(first)
  return {
    limit = tonumber(ARGV[first]), window = tonumber(ARGV[first + 1]),
    margin = tonumber(ARGV[first + 2]), adaptive = tonumber(ARGV[first + 3]),
    max_extra = tonumber(ARGV[first + 4]),
  }
end
"""

# ARGV: limit, window, margin, adaptive, max_extra (us) | max_wait_us (-1 = unbounded),
# customer, lane, grant_log. Returns {granted (1/0), wait_us, slot_us, grant}.
_LUA_RESERVE = (
    _LUA_COMMON
    + """
local cfg = config(1)
local max_wait = tonumber(ARGV[6])
local now = redis_now()
trim(cfg, now)
local slot = next_slot(cfg, {}, now)
local wait = slot - now
if max_wait >= 0 and wait > max_wait then
  return {0, wait, slot, ''}
end
return {1, wait, slot, book(cfg, slot, wait, ARGV[7], ARGV[8], '-', tonumber(ARGV[9]))}
"""
)

# ARGV: limit, window, margin, adaptive, max_extra (us) | customer, lane, ticket, weight,
# max_wait_us, lookahead_us, presence_us, grace_us, scan, grant_log.
# Returns {action, wait_us, slot_us, grant, rank, poll_us}: action 1 granted (sleep wait, then
# send), 0 poll (sleep poll_us, then ask again), -1 re-schedule (come back before wait_us).
_LUA_FAIR = (
    _LUA_COMMON
    + """
local cfg = config(1)
local customer, lane, ticket = ARGV[6], ARGV[7], ARGV[8]
local weight = tonumber(ARGV[9])
local max_wait, lookahead = tonumber(ARGV[10]), tonumber(ARGV[11])
local presence, grace = tonumber(ARGV[12]), tonumber(ARGV[13])
local scan, grant_log = tonumber(ARGV[14]), tonumber(ARGV[15])
local CUSTOMERS, TICKETS = P .. ':customers', P .. ':tickets'
local WEIGHTS, VT = P .. ':weights', P .. ':vt'
local function lane_key(c, l) return P .. ':lane:' .. l .. ':' .. c end
local function parse(raw)  -- "present_until expires lane customer"
  local present, expires, l, c = string.match(raw, '^(%d+) (%d+) (%S+) (.*)$')
  return tonumber(present), tonumber(expires), l, c
end
local function store(id, present, expires, l, c)
  redis.call('HSET', TICKETS, id, string.format('%d %d ', present, expires) .. l .. ' ' .. c)
end
local function queued(c)
  return redis.call('LLEN', lane_key(c, 'single')) + redis.call('LLEN', lane_key(c, 'batch'))
end
local function weight_of(c)
  return tonumber(redis.call('HGET', WEIGHTS, c) or '1')
end

local now = redis_now()
trim(cfg, now)
local vt = tonumber(redis.call('GET', VT) or '0')

-- Register the ticket (or find it again: a re-scheduled task keeps its place) and mark it here.
local raw = redis.call('HGET', TICKETS, ticket)
if raw then
  local _p, _e
  _p, _e, lane, customer = parse(raw)
end
if not (raw and redis.call('LPOS', lane_key(customer, lane), ticket)) then
  redis.call('RPUSH', lane_key(customer, lane), ticket)
end
touch(lane_key(customer, lane))
if not redis.call('ZSCORE', CUSTOMERS, customer) then
  redis.call('ZADD', CUSTOMERS, string.format('%.17g', vt), customer)
end
redis.call('HSET', WEIGHTS, customer, ARGV[9])
store(ticket, now + presence, now + grace, lane, customer)

-- The free slots within the lookahead (at most limit) go to the first present tickets in fair
-- order, one each; among those few, whoever asks first books the earliest.
local memo = {}
local slot, free = free_slots(cfg, memo, now, lookahead)
local need = math.max(free, 1)
local members = redis.call('ZRANGE', CUSTOMERS, 0, -1, 'WITHSCORES')
local live = {}  -- customers still waiting, in tag order: {name, tag}
local candidates = {}  -- present tickets: {key, customer index, place, ticket}
for i = 1, #members, 2 do
  local c, tag = members[i], tonumber(members[i + 1])
  local found = 0
  local effective, w = math.max(tag, vt), weight_of(c)
  for _, l in ipairs({'single', 'batch'}) do
    local key = lane_key(c, l)
    for _, id in ipairs(redis.call('LRANGE', key, 0, scan - 1)) do
      if found >= need then break end
      local entry = redis.call('HGET', TICKETS, id)
      local present, expires = 0, 0
      if entry then present, expires = parse(entry) end
      if expires < now then  -- its caller died or gave up: drop it
        redis.call('LREM', key, 1, id)
        redis.call('HDEL', TICKETS, id)
      elseif present >= now then
        candidates[#candidates + 1] = {effective + found / w, i, found, id}
        found = found + 1
      end
    end
  end
  if queued(c) == 0 then
    redis.call('ZREM', CUSTOMERS, c)
    redis.call('HDEL', WEIGHTS, c)
  else
    live[#live + 1] = {c, tag}
  end
end
table.sort(candidates, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)
local chosen, listed = false, false
for index, candidate in ipairs(candidates) do
  if candidate[4] == ticket then
    listed = true
    chosen = index <= free
  end
end
-- The caller's ticket is beyond the scan depth: it may fill a slot nobody present claims.
if not listed and #candidates < free then chosen = true end
for _, key in ipairs({CUSTOMERS, TICKETS, WEIGHTS}) do touch(key) end

local wait = slot - now
if chosen then
  local tag = math.max(tonumber(redis.call('ZSCORE', CUSTOMERS, customer) or vt), vt)
  redis.call('LREM', lane_key(customer, lane), 1, ticket)
  redis.call('HDEL', TICKETS, ticket)
  if queued(customer) == 0 then
    redis.call('ZREM', CUSTOMERS, customer)
    redis.call('HDEL', WEIGHTS, customer)
  else
    redis.call('ZADD', CUSTOMERS, string.format('%.17g', tag + 1 / weight), customer)
  end
  redis.call('SET', VT, string.format('%.17g', tag), 'PX', 600000)
  return {1, wait, slot, book(cfg, slot, wait, customer, lane, ticket, grant_log), 0, 0}
end

-- Not this caller's slot (yet): estimate its turn from the tags. Its own tag is its customer's
-- plus its place among that customer's tickets; a customer with tag t and n tickets has those
-- with t + j / w < mine (j < n) ahead of it.
local my_weight = weight
local my_tag = math.max(tonumber(redis.call('ZSCORE', CUSTOMERS, customer) or vt), vt)
local position = redis.call('LPOS', lane_key(customer, lane), ticket) or 0
if lane == 'batch' then position = position + redis.call('LLEN', lane_key(customer, 'single')) end
local my_key = my_tag + position / my_weight
local rank = position
for _, item in ipairs(live) do
  if item[1] ~= customer then
    local ahead = math.ceil((my_key - math.max(item[2], vt)) * weight_of(item[1]))
    if ahead > 0 then rank = rank + math.min(queued(item[1]), ahead) end
  end
end
local pace = (cfg.window + math.max(cfg.margin, memo.floor or 0)) / cfg.limit
local turn = slot + math.floor(rank * pace)
local turn_wait = turn - now
if turn_wait > max_wait then
  -- Away until shortly before its turn: it keeps its place but holds no slot meanwhile.
  store(ticket, now - 1, now + turn_wait + grace, lane, customer)
  return {-1, turn_wait, turn, '', rank, 0}
end
local poll = math.min(math.max(turn_wait - lookahead / 2, 20000), lookahead / 2)
store(ticket, now + poll + presence, now + poll + grace, lane, customer)
return {0, turn_wait, turn, '', rank, poll}
"""
)

# ARGV: grant, rtt_us, late_us, max_extra_us. Records what request `grant` needed (see docstring).
_LUA_OBSERVE = (
    _LUA_COMMON
    + """
local rtt, late, max_extra = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = redis_now()
-- The fastest round trip seen, rising by 1 ms a minute: a busy spell (every sample slowed by
-- the caller's own CPU) must not raise it, which would understate every request's delay.
local fastest = rtt
local stored = redis.call('GET', P .. ':fastest')
if stored then
  local value, at = string.match(stored, '^(%d+) (%d+)$')
  fastest = math.min(rtt, tonumber(value) + math.floor((now - tonumber(at)) / 60000))
end
redis.call('SET', P .. ':fastest', string.format('%d %d', fastest, now), 'PX', 3600000)
local extra = math.min(math.max(late, 0) + rtt - fastest, max_extra)
-- Only a slot still in the log can use it (the trim drops its entry with it).
for _, raw in ipairs(redis.call('LRANGE', P, 0, -1)) do
  if entry_grant(raw) == ARGV[1] then
    redis.call('HSET', P .. ':extra', ARGV[1], extra)
    break
  end
end
redis.call('LPUSH', P .. ':extras', extra)
redis.call('LTRIM', P .. ':extras', 0, 31)
for _, key in ipairs({P .. ':extras', P .. ':extra'}) do touch(key) end
return {extra, fastest}
"""
)

# ARGV: retry_after_us. Holds every slot until then and raises the floor under the extra.
_LUA_PENALIZE = (
    _LUA_COMMON
    + """
local now = redis_now()
local hold = math.max(tonumber(redis.call('GET', P .. ':hold') or '0'), now + tonumber(ARGV[1]))
redis.call('SET', P .. ':hold', string.format('%d', hold), 'PX', math.ceil((hold - now) / 1000) + 1)
local floor = floor_now(now) + tonumber(ARGV[2])
redis.call('SET', P .. ':floor', string.format('%d %d', floor, now), 'PX', 3600000)
redis.call('INCR', P .. ':n429')
touch(P .. ':n429')
return {hold - now, floor}
"""
)

# ARGV: limit, window, margin, adaptive, max_extra (us). Returns {recent slots in
# (now - window, now], next free slot - now, booked slots after now, hold - now, floor, fastest
# rtt, pending extra, 429s, tickets, customers: name, tag, single, batch, ...}.
_LUA_STATE = (
    _LUA_COMMON
    + """
local cfg = config(1)
local now = redis_now()
local recent, booked = 0, 0
for _, raw in ipairs(redis.call('LRANGE', P, 0, -1)) do
  local slot = entry_slot(raw)
  if slot > now then
    booked = booked + 1
  elseif slot > now - cfg.window then
    recent = recent + 1
  end
end
local fastest = -1
local stored = redis.call('GET', P .. ':fastest')
if stored then fastest = tonumber(string.match(stored, '^(%d+)')) end
local hold = tonumber(redis.call('GET', P .. ':hold') or '0')
local result = {
  recent, next_slot(cfg, {}, now) - now, booked, math.max(hold - now, 0), floor_now(now),
  fastest, pending_extra(), tonumber(redis.call('GET', P .. ':n429') or '0'),
  redis.call('HLEN', P .. ':tickets'),
}
local members = redis.call('ZRANGE', P .. ':customers', 0, 99, 'WITHSCORES')
for i = 1, #members, 2 do
  local c = members[i]
  result[#result + 1] = c
  result[#result + 1] = members[i + 1]
  result[#result + 1] = redis.call('LLEN', P .. ':lane:single:' .. c)
  result[#result + 1] = redis.call('LLEN', P .. ':lane:batch:' .. c)
end
return result
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


def parse_weights(text: str) -> dict[str, float]:
    """Parse "42=2,17=0.5" (customer=weight, comma-separated) into a dict; empty: no weights."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        customer, sep, value = item.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = 0.0
        if not sep or not customer.strip() or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"invalid customer weight {item!r}; expected e.g. '42=2'")
        weights[customer.strip()] = weight
    return weights


def _us(seconds: float) -> int:
    return max(0, round(seconds * _MICRO))


@dataclass(frozen=True)
class Reservation:
    granted: bool
    wait: float  # seconds from the reservation until the slot (or the estimated turn)
    slot_time: float  # Redis clock, seconds since the epoch
    grant: str = ""  # the slot's id in the log (adaptive extra), for observe()
    rank: int = 0  # fair: tickets ahead of this one
    poll: float | None = None  # fair: ask again after this many seconds (None: re-schedule)
    # time.monotonic() at which the caller was due to send, from before it asked: never later
    # than the slot, so lateness is never understated (local clock: not part of equality)
    send_at: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class Grant:
    slot_time: float
    lane: str
    ticket: str  # "-" for the fifo algorithm
    customer: str


class RateLimitExceeded(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limit reached; next slot in {wait:.3f}s")
        self.wait = wait


class SlidingWindowLimiter:
    """At most ``limit`` calls per rolling ``window`` (+ extra) for one API key; first come,
    first served (``fifo``)."""

    algorithm = "fifo"

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        limit: int,
        window: float = 1.0,
        margin: float = 0.02,
        namespace: str = "orderflow:ratelimit",
        *,
        adaptive: bool = False,
        max_extra: float = 0.25,
        grant_log: int = 0,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if window <= 0 or margin < 0 or max_extra < 0:
            raise ValueError("window must be > 0, margin and max_extra >= 0")
        self.limit = limit
        self.window = window
        self.margin = margin
        self.adaptive = adaptive
        self.max_extra = max_extra
        self.grant_log = grant_log
        # Only a digest reaches Redis, so the API key never shows up in KEYS/MONITOR/backups.
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.redis_key = f"{namespace}:{digest}"
        self._config = [
            limit,
            _us(window),
            _us(margin),
            int(adaptive),
            _us(max_extra) if adaptive else 0,
        ]
        self._reserve = client.register_script(_LUA_RESERVE)
        self._observe = client.register_script(_LUA_OBSERVE)
        self._penalize = client.register_script(_LUA_PENALIZE)
        self._state = client.register_script(_LUA_STATE)
        self._client = client

    def reserve(
        self, max_wait: float | None = None, *, customer: str = "-", lane: str = "-"
    ) -> Reservation:
        """Atomically book the next slot; refuse without booking if it is > max_wait away."""
        max_wait_us = -1 if max_wait is None else max(0, math.floor(max_wait * _MICRO))
        asked_at = time.monotonic()
        granted, wait_us, slot_us, grant = self._reserve(
            keys=[self.redis_key],
            args=[*self._config, max_wait_us, customer, lane, self.grant_log],
        )
        wait = int(wait_us) / _MICRO
        return Reservation(
            granted=bool(granted),
            wait=wait,
            slot_time=int(slot_us) / _MICRO,
            grant=_text(grant),
            send_at=asked_at + wait,
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

    def observe(self, reservation: Reservation, *, sent_at: float, answered_at: float) -> float:
        """Report one request's timing (time.monotonic() values); returns the extra it needed.

        Only with ``adaptive``: the slot ``limit`` places later keeps that much further away.
        """
        if not self.adaptive or not reservation.grant:
            return 0.0
        late = max(0.0, sent_at - reservation.send_at)
        extra_us, _fastest = self._observe(
            keys=[self.redis_key],
            args=[reservation.grant, _us(answered_at - sent_at), _us(late), _us(self.max_extra)],
        )
        return int(extra_us) / _MICRO

    def penalize(self, retry_after: float) -> float:
        """The provider answered 429: no slot before ``retry_after`` seconds from now, and a
        wider extra for a while. Returns the hold in seconds."""
        hold_us, _floor = self._penalize(
            keys=[self.redis_key], args=[_us(retry_after), FLOOR_STEP_US]
        )
        return int(hold_us) / _MICRO

    observe_429 = penalize

    def state(self) -> dict:
        """Snapshot for operators, consistent with what the next grant would do right now."""
        values = self._state(keys=[self.redis_key], args=self._config)
        recent, next_free, booked, hold, floor, fastest, pending, n429, tickets = values[:9]
        customers = {}
        rest = values[9:]
        for index in range(0, len(rest), 4):
            name, tag, single, batch = rest[index : index + 4]
            customers[_text(name)] = {
                "tag": float(tag),
                "single": int(single),
                "batch": int(batch),
            }
        return {
            "algorithm": self.algorithm,
            "limit": self.limit,
            "window": self.window,
            "margin": self.margin,
            "adaptive": self.adaptive,
            "recent_slots": int(recent),
            "next_free_in": int(next_free) / _MICRO,
            "waiting": int(booked) + int(tickets),
            "booked_ahead": int(booked),
            "tickets": int(tickets),
            "customers": customers,
            "hold_in": int(hold) / _MICRO,
            "extra_floor": int(floor) / _MICRO,
            "fastest_rtt": None if int(fastest) < 0 else int(fastest) / _MICRO,
            "pending_extra": int(pending) / _MICRO,
            "provider_429s": int(n429),
        }

    def grants(self) -> list[Grant]:
        """The last ``grant_log`` grants, oldest first."""
        grants = []
        for raw in self._client.lrange(f"{self.redis_key}:grants", 0, -1):
            slot, lane, ticket, customer = _text(raw).split(" ", 3)
            grants.append(Grant(int(slot.split(":")[0]) / _MICRO, lane, ticket, customer))
        return grants

    def reset(self) -> None:
        keys = [self.redis_key, *self._client.scan_iter(match=f"{self.redis_key}:*", count=500)]
        self._client.delete(*keys)


class FairLimiter(SlidingWindowLimiter):
    """The same pace, shared fairly between customers (``fair``; see the module docstring)."""

    algorithm = "fair"

    def __init__(
        self,
        *args,
        lookahead: float = 0.4,
        presence: float = 0.15,
        ticket_grace: float = 30.0,
        scan: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if lookahead <= 0 or presence <= 0 or ticket_grace <= 0 or scan < 1:
            raise ValueError("lookahead, presence, ticket_grace and scan must be positive")
        self.lookahead = lookahead
        self.presence = presence
        self.ticket_grace = ticket_grace
        self.scan = scan
        self._fair = self._client.register_script(_LUA_FAIR)

    def request(
        self,
        *,
        customer: str,
        lane: str = "single",
        ticket: str,
        weight: float = 1.0,
        max_wait: float,
    ) -> Reservation:
        """One step of waiting for a turn: granted, poll again (``.poll``), or re-schedule."""
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}, not {lane!r}")
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError("weight must be a positive number")
        asked_at = time.monotonic()
        action, wait_us, slot_us, grant, rank, poll_us = self._fair(
            keys=[self.redis_key],
            args=[
                *self._config,
                customer,
                lane,
                ticket,
                repr(float(weight)),
                _us(max_wait),
                _us(self.lookahead),
                _us(self.presence),
                _us(self.ticket_grace),
                self.scan,
                self.grant_log,
            ],
        )
        wait = int(wait_us) / _MICRO
        return Reservation(
            granted=int(action) == 1,
            wait=wait,
            slot_time=int(slot_us) / _MICRO,
            grant=_text(grant),
            rank=int(rank),
            poll=int(poll_us) / _MICRO if int(action) == 0 else None,
            send_at=asked_at + wait,
        )

    def acquire_turn(
        self,
        *,
        customer: str,
        lane: str = "single",
        ticket: str | None = None,
        weight: float = 1.0,
        max_wait: float,
    ) -> Reservation:
        """Wait in place for this caller's fair turn and sleep until its slot; raise
        RateLimitExceeded(wait=when to come back) if the turn is further than ``max_wait``.

        A caller polls for at most about ``2 * max_wait`` before it gives up its worker.
        """
        ticket = ticket or uuid.uuid4().hex
        lead = max_wait / 2  # come back this long before the estimated turn
        deadline = time.monotonic() + 2 * max_wait
        while True:
            reservation = self.request(
                customer=customer, lane=lane, ticket=ticket, weight=weight, max_wait=max_wait
            )
            if reservation.granted:
                if reservation.wait > 0:
                    time.sleep(reservation.wait)
                return reservation
            if reservation.poll is None:
                raise RateLimitExceeded(max(reservation.wait - lead, self.lookahead))
            if time.monotonic() + reservation.poll > deadline:
                if max_wait == 0:
                    raise RateLimitExceeded(self.lookahead)
                max_wait = 0.0  # one last ask: granted if it is this caller's slot, else away
            time.sleep(reservation.poll)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def limiter_for(api_key: str, rate: str, client: redis.Redis) -> SlidingWindowLimiter:
    limit, window = parse_rate(rate)
    return SlidingWindowLimiter(client, api_key, limit, window)


def provider_limiter() -> SlidingWindowLimiter | None:
    """The limiter every provider call goes through (None when switched off for a baseline)."""
    if not settings.PAYMENT_PROVIDER_CLUSTER_RATE_LIMIT:
        return None
    limit, window = parse_rate(settings.PAYMENT_PROVIDER_RATE_LIMIT)
    options = {
        "margin": settings.PAYMENT_PROVIDER_RATE_MARGIN,
        "adaptive": settings.PAYMENT_PROVIDER_RATE_ADAPTIVE,
        "grant_log": 1000,
    }
    if settings.PAYMENT_PROVIDER_LIMITER == "fifo":
        return SlidingWindowLimiter(
            get_redis(), settings.PAYMENT_PROVIDER_API_KEY, limit, window, **options
        )
    return FairLimiter(
        get_redis(),
        settings.PAYMENT_PROVIDER_API_KEY,
        limit,
        window,
        lookahead=settings.PAYMENT_PROVIDER_FAIR_LOOKAHEAD,
        **options,
    )
