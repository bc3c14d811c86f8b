"""Live order updates: every timeline entry is announced on Redis pub/sub after commit, and the
async views (`?wait=N`, the order's event stream) wait on it holding no thread and no database
connection.

- `announce()` publishes an order's new entry and status once the transaction commits.
- One pub/sub connection per web process (`OrderUpdates`) carries every order anyone waits on:
  a thousand held clients cost two Redis connections, not a thousand.
- A waiter subscribes before it reads the order, so no update slips between the read and the
  wait; it closes its database connection and gives its request's thread back before waiting.
- `held_slot_acquire()` caps the waits and streams one user holds at once: a lease per slot in a
  Redis sorted set, scored by its expiry, so a crashed process's slots lapse on their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import redis
import redis.asyncio
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import connections, transaction
from rest_framework.fields import DateTimeField

from project.redis_client import get_redis

from .models import TERMINAL_STATUSES, Order, OrderEvent

logger = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 30
SUBSCRIBE_TIMEOUT = 5.0
_datetime_field = DateTimeField()  # the API's rendering of created_at


class LiveUnavailable(Exception):
    """Redis cannot carry live updates now (down, or the connection dropped)."""


class HeldLimitExceeded(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many held waits and streams")
        self.retry_after = retry_after


def order_channel(order_id) -> str:
    return f"orderflow:order:{order_id}"


def entry_data(entry: OrderEvent) -> dict:
    """A timeline entry as the API shows it, with its id (the stream's event id)."""
    return {
        "id": entry.pk,
        "name": entry.name,
        "created_at": _datetime_field.to_representation(entry.created_at),
        "attempt": entry.attempt,
        "detail": entry.detail,
    }


def announce(*, order: Order, event: str, entry: OrderEvent | None = None) -> None:
    """Publish the order's new state (and its new timeline entry) once the transaction commits."""
    message = json.dumps(
        {
            "order_id": str(order.pk),
            "status": order.status,
            "event": event,
            "entry": entry_data(entry) if entry is not None else None,
        }
    )
    channel = order_channel(order.pk)

    def publish() -> None:
        try:
            get_redis().publish(channel, message)
        except Exception as exc:  # live updates are a courtesy; the database is the truth
            logger.warning("order update not announced", extra={"error": repr(exc)})

    transaction.on_commit(publish)


# --- the per-user cap on held waits and streams -------------------------------------------------

# KEYS[1] the user's leases (member: slot id, score: expiry in ms); ARGV: slot, lease ms, cap.
# Redis's own clock, so web processes on different hosts agree on what has expired.
_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) - now_ms}
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
return {1, 0}
"""
_RENEW = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
return 1
"""


@dataclass(frozen=True)
class HeldSlot:
    key: str
    member: str


def _held_key(user_id) -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:live:held:{user_id}"


def held_slot_acquire(*, user_id) -> HeldSlot | None:
    """Take one of the user's held slots, or raise HeldLimitExceeded.

    None when Redis is down: the cap cannot be counted, and the wait will not hold anyway.
    """
    slot = HeldSlot(_held_key(user_id), uuid.uuid4().hex)
    lease_ms = settings.LIVE_HELD_LEASE_SECONDS * 1000
    try:
        granted, retry_ms = get_redis().eval(
            _ACQUIRE, 1, slot.key, slot.member, lease_ms, settings.LIVE_MAX_HELD_PER_USER
        )
    except redis.RedisError as exc:
        logger.warning("held-slot counter unavailable, not counted", extra={"error": repr(exc)})
        return None
    if not granted:
        raise HeldLimitExceeded(retry_after=max(1, -(-int(retry_ms) // 1000)))
    return slot


async def held_slot_renew(slot: HeldSlot | None) -> None:
    if slot is None:
        return
    try:
        await _async_redis().eval(
            _RENEW, 1, slot.key, slot.member, settings.LIVE_HELD_LEASE_SECONDS * 1000
        )
    except redis.RedisError as exc:
        logger.warning("held-slot lease not renewed", extra={"error": repr(exc)})


async def held_slot_release(slot: HeldSlot | None) -> None:
    if slot is None:
        return
    try:
        await _async_redis().zrem(slot.key, slot.member)
    except redis.RedisError as exc:  # the lease lapses on its own
        logger.warning("held slot not released", extra={"error": repr(exc)})


def held_slot_release_now(slot: HeldSlot | None) -> None:
    """The sync release, for a slot taken by a request that then failed."""
    if slot is None:
        return
    try:
        get_redis().zrem(slot.key, slot.member)
    except redis.RedisError as exc:
        logger.warning("held slot not released", extra={"error": repr(exc)})


# --- one pub/sub connection per process ---------------------------------------------------------

_BROKEN = object()  # put in every queue when the connection is lost
_closing: set[asyncio.Future] = set()


def _new_async_redis() -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
    )


# One client and one listener per event loop: asyncio connections belong to the loop that made
# them (a test client runs each request on a loop of its own).
_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_listeners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _async_redis() -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = _new_async_redis()
    return client


class Subscription:
    """The updates of one order, as they arrive."""

    def __init__(self, updates: OrderUpdates, channel: str) -> None:
        self._updates = updates
        self.channel = channel
        self.queue: asyncio.Queue = asyncio.Queue()

    async def get(self, timeout: float) -> dict | None:
        """The next update, or None after `timeout` seconds; LiveUnavailable if Redis is lost."""
        try:
            message = await asyncio.wait_for(self.queue.get(), timeout=max(0.0, timeout))
        except TimeoutError:
            return None
        if message is _BROKEN:
            raise LiveUnavailable("the pub/sub connection was lost")
        return message

    async def close(self) -> None:
        await self._updates.unsubscribe(self)


class OrderUpdates:
    """Multiplexes every order channel this process waits on over one pub/sub connection."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._pubsub = client.pubsub()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._confirmed: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        # One command at a time: PubSub opens its connection lazily, and two first subscribers
        # at once would each open one, leaving one SUBSCRIBE on a connection nobody reads.
        self._commands = asyncio.Lock()
        self.broken = False

    async def subscribe(self, order_id) -> Subscription:
        channel = order_channel(order_id)
        subscription = Subscription(self, channel)
        self._subscribers.setdefault(channel, set()).add(subscription)
        try:
            confirmed = self._confirmed.get(channel)
            if confirmed is None:
                confirmed = asyncio.get_running_loop().create_future()
                self._confirmed[channel] = confirmed
                async with self._commands:
                    await self._pubsub.subscribe(channel)
                if self._reader is None:
                    self._reader = asyncio.create_task(self._read())
            # Confirmed: Redis now delivers every message published on the channel to us.
            await asyncio.wait_for(asyncio.shield(confirmed), timeout=SUBSCRIBE_TIMEOUT)
        except TimeoutError as exc:  # slow, not lost: only this subscriber gives up
            await self.unsubscribe(subscription)
            raise LiveUnavailable("no subscription confirmed in time") from exc
        except (redis.RedisError, OSError) as exc:
            self._fail(exc)
            await self.unsubscribe(subscription)
            raise LiveUnavailable(repr(exc)) from exc
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.channel)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if subscribers:
            return
        del self._subscribers[subscription.channel]
        self._confirmed.pop(subscription.channel, None)
        if not self.broken:
            try:
                async with self._commands:
                    await self._pubsub.unsubscribe(subscription.channel)
            except (redis.RedisError, OSError) as exc:
                self._fail(exc)

    async def _read(self) -> None:
        try:
            while True:
                message = await self._pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                channel = message["channel"].decode()
                if message["type"] == "subscribe":
                    confirmed = self._confirmed.get(channel)
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(True)
                elif message["type"] == "message":
                    update = json.loads(message["data"])
                    for subscription in self._subscribers.get(channel, ()):
                        subscription.queue.put_nowait(update)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone: nobody may trust it any more
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.broken:
            return
        self.broken = True
        logger.warning("live updates connection lost", extra={"error": repr(exc)})
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.queue.put_nowait(_BROKEN)
        for confirmed in self._confirmed.values():
            if not confirmed.done():
                confirmed.set_exception(LiveUnavailable(repr(exc)))
                confirmed.exception()  # retrieved: nobody else may be waiting on it
        loop = asyncio.get_running_loop()
        if _listeners.get(loop) is self:
            del _listeners[loop]  # the next subscriber starts a fresh connection
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        closing = asyncio.ensure_future(self._pubsub.aclose())
        _closing.add(closing)  # a reference until done: the loop keeps only weak ones
        closing.add_done_callback(_closing.discard)


async def subscribe(order_id) -> Subscription:
    """Subscribe to an order's updates (raises LiveUnavailable when Redis is down)."""
    loop = asyncio.get_running_loop()
    updates = _listeners.get(loop)
    if updates is None:
        updates = _listeners[loop] = OrderUpdates(_async_redis())
    return await updates.subscribe(order_id)


# --- waiting without a thread or a connection ---------------------------------------------------


def close_database_connections() -> None:
    """Give this thread's database connections back (to the pool, or closed) before a wait.

    Not inside a transaction (a test's): closing there would break it.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def release_request_thread() -> None:
    """Let the thread Django gave this request end while it waits.

    Django runs a request's sync parts (middleware, signals, the ORM) on one thread made for the
    request, which otherwise lives, idle, until the response is finished: a held stream would
    hold it for minutes. Its connections are closed first (close_database_connections), and a
    later sync call in the request starts a new thread. This reaches into asgiref's per-request
    executor (`SyncToAsync.context_to_thread_executor`), hence this one small helper.
    """
    context = SyncToAsync.thread_sensitive_context.get(None)
    executor = SyncToAsync.context_to_thread_executor.pop(context, None) if context else None
    if executor is not None:
        executor.shutdown(wait=False)


def order_status(order_id) -> str | None:
    """The order's status now, read on the calling thread, which then closes its connection."""
    try:
        return Order.objects.filter(pk=order_id).values_list("status", flat=True).first()
    finally:
        close_database_connections()


async def wait_until_terminal(*, subscription: Subscription, timeout: float) -> bool:
    """Wait up to `timeout` seconds for an update saying the order is terminal."""
    deadline = time.monotonic() + max(0.0, min(float(timeout), MAX_WAIT_SECONDS))
    while (remaining := deadline - time.monotonic()) > 0:
        update = await subscription.get(timeout=remaining)
        if update is not None and update["status"] in TERMINAL_STATUSES:
            return True
    return False


# --- the event stream ---------------------------------------------------------------------------


@dataclass
class StreamSnapshot:
    """What the stream sends first: the entries after the client's Last-Event-ID, the status."""

    status: str
    entries: list[dict]
    after_id: int | None = None


def snapshot_for(order: Order, *, after_id: int | None) -> StreamSnapshot:
    entries = OrderEvent.objects.filter(order=order).order_by("id")
    if after_id is not None:
        entries = entries.filter(id__gt=after_id)
    return StreamSnapshot(
        status=order.status, entries=[entry_data(entry) for entry in entries], after_id=after_id
    )


def sse(event: str, data: dict, *, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _status_data(status: str, read_progress) -> dict:
    if read_progress is None:
        return {"status": status}
    return {"status": status, "progress": await read_progress()}


async def order_events(
    *,
    subscription: Subscription | None,
    snapshot: StreamSnapshot,
    slot: HeldSlot | None,
    read_final: Callable[[int | None], Awaitable[tuple[dict, StreamSnapshot]]],
    close_connections: Callable[[], Awaitable[None]],
    read_progress: Callable[[], Awaitable[dict]] | None = None,
) -> AsyncIterator[bytes]:
    """The stream's body: `timeline` per entry (its id is the entry's), `status` per change, then
    `final` (the order as GET /api/orders/<id>/ shows it) at a terminal status, and the end.
    The final read also sends any entry the updates did not carry (several entries committed
    together arrive in an order of their own, and the terminal one may not come last). A status
    event carries the order's `progress` (what the tracking page draws), read when the status
    changes, on a connection closed right after.

    A stream ends after LIVE_STREAM_MAX_SECONDS or when Redis is lost; EventSource reconnects
    with Last-Event-ID and is sent only what it has not seen.
    """
    try:
        # First the request's own connection goes back (the middleware ran since the view's
        # reads): the progress read takes one of its own, and a stream that held one while it
        # waited for a second could, with a pool's worth of others, wait for ever.
        await close_connections()
        release_request_thread()
        first_status = await _status_data(snapshot.status, read_progress)
        yield b"retry: 2000\n\n"
        sent: set[int] = set()
        last_id = None
        for entry in snapshot.entries:
            sent.add(entry["id"])
            last_id = entry["id"]
            yield sse("timeline", entry, event_id=entry["id"])
        status = snapshot.status
        yield sse("status", first_status)
        deadline = time.monotonic() + settings.LIVE_STREAM_MAX_SECONDS
        while status not in TERMINAL_STATUSES:
            if subscription is None or (remaining := deadline - time.monotonic()) <= 0:
                return
            update = await subscription.get(timeout=min(settings.LIVE_KEEPALIVE_SECONDS, remaining))
            if update is None:
                yield b": keep-alive\n\n"
                await held_slot_renew(slot)
                continue
            entry = update.get("entry")
            if entry and entry["id"] not in sent:
                sent.add(entry["id"])
                last_id = max(last_id or 0, entry["id"])
                yield sse("timeline", entry, event_id=entry["id"])
            if update["status"] != status:
                status = update["status"]
                yield sse("status", await _status_data(status, read_progress))
        final, latest = await read_final(snapshot.after_id)
        for entry in latest.entries:
            if entry["id"] not in sent:
                sent.add(entry["id"])
                last_id = max(last_id or 0, entry["id"])
                yield sse("timeline", entry, event_id=entry["id"])
        if final["status"] != status:
            yield sse("status", {"status": final["status"]})
        yield sse("final", final, event_id=last_id)
    except LiveUnavailable:
        return  # the client reconnects and is told what it missed
    finally:
        if subscription is not None:
            await subscription.close()
        await held_slot_release(slot)
