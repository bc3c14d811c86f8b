"""Tests for orders.ratelimit against the real Redis (DB 14 unless ORDERFLOW_TEST_REDIS_URL is set).

Throughput floor used by the concurrency tests: with the queue kept saturated the limiter grants
slot k at t0 + floor(k / limit) * (window + margin). For N calls with N a multiple of limit, the
N - limit calls after the initial burst therefore span (N / limit - 1) * (window + margin), so
(N - limit) / (last - first) ideally equals limit / (window + margin), i.e. 0.98 * limit / window
with the default 2% margin. Requiring >= 0.95 * limit / window leaves ~3% of the run (about 90 ms
over 3 s) for thread wake-ups, round trips and sleep overshoot, and still fails a limiter that
wastes budget (e.g. spacing every call by window / limit gives ~0.77).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from project.ratelimit import (
    RateLimitExceeded,
    Reservation,
    SlidingWindowLimiter,
    limiter_for,
    parse_rate,
)

REDIS_URL = os.environ.get("ORDERFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
MARGIN = 0.02
EPS = 1e-6  # slot times are exact microseconds; this only absorbs the float conversion

# fork: the worker function needs no re-import in the child, and Linux is the deployment target.
_MP = multiprocessing.get_context("fork")


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(REDIS_URL)
    conn.ping()
    yield conn
    conn.close()


@pytest.fixture
def namespace(client: redis.Redis) -> Iterator[str]:
    ns = f"orderflow:test-ratelimit:{uuid.uuid4().hex}"
    yield ns
    for key in client.scan_iter(match=f"{ns}:*"):
        client.delete(key)


def _api_key() -> str:
    return f"sk_live_{uuid.uuid4().hex}"


def _assert_rolling_window(stamps: list[float], limit: int, window: float) -> None:
    # A half-open window [a, a + window) holds limit + 1 stamps iff some limit + 1 consecutive
    # sorted stamps span less than window; a span of exactly window is allowed.
    ordered = sorted(stamps)
    for i in range(len(ordered) - limit):
        span = ordered[i + limit] - ordered[i]
        assert span >= window, f"{limit + 1} calls within {span:.4f}s starting at index {i}"


def _hammer(
    url: str,
    namespace: str,
    api_key: str,
    limit: int,
    window: float,
    n_threads: int,
    counter: Any,
    total: int,
    barrier: Any,
) -> list[tuple[float, float]]:
    """Run n_threads callers that share `total` acquire() calls; return (sent_at, slot_time)."""
    conn = redis.Redis.from_url(url)
    limiter = SlidingWindowLimiter(conn, api_key, limit, window, namespace=namespace)
    results: list[tuple[float, float]] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        while True:
            with counter.get_lock():
                if counter.value >= total:
                    return
                counter.value += 1
            reservation = limiter.acquire()
            sent_at = time.time()  # the moment the provider call would go out
            assert reservation.granted
            with lock:
                results.append((sent_at, reservation.slot_time))

    # Open one connection per thread up front, as long-lived workers have. Sixteen threads
    # connecting at once hold the GIL long enough to deliver some first-burst grants 20-50 ms
    # late, which is harness noise beyond the 20 ms margin, not limiter behaviour.
    pool = conn.connection_pool
    for held in [pool.get_connection() for _ in range(n_threads)]:
        pool.release(held)
    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conn.close()
    return results


def _process_main(queue: Any, *args: Any) -> None:
    queue.put(_hammer(*args))


def _check_schedule(
    results: list[tuple[float, float]], total: int, limit: int, window: float
) -> float:
    assert len(results) == total
    sent = [stamp for stamp, _ in results]
    slots = sorted(slot for _, slot in results)
    # On the Redis clock the guarantee is exact, margin included.
    for i in range(len(slots) - limit):
        assert slots[i + limit] - slots[i] >= window + MARGIN - EPS
    # What the provider would see: real send times, jitter absorbed by the margin.
    _assert_rolling_window(sent, limit, window)
    rate = (total - limit) / (max(sent) - min(sent))
    assert rate >= 0.95 * limit / window, f"throughput {rate:.2f}/s too low"
    return rate


def test_parse_rate() -> None:
    assert parse_rate("2/s") == (2, 1.0)
    assert parse_rate("10/m") == (10, 60.0)
    assert parse_rate("120/h") == (120, 3600.0)
    assert parse_rate("1/d") == (1, 86400.0)
    assert parse_rate("5/2s") == (5, 2.0)
    assert parse_rate("3/0.5s") == (3, 0.5)
    assert parse_rate(" 4 / s ") == (4, 1.0)


@pytest.mark.parametrize(
    "bad", ["", "2", "2/", "/s", "2/x", "0/s", "-1/s", "2/0s", "1.5/s", "2/s/s", "two/s", "2 s"]
)
def test_parse_rate_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(bad)


def test_threads_share_the_budget(namespace: str) -> None:
    limit, window, total, n_threads = 10, 1.0, 40, 16
    counter = _MP.Value("i", 0)
    results = _hammer(
        REDIS_URL,
        namespace,
        _api_key(),
        limit,
        window,
        n_threads,
        counter,
        total,
        threading.Barrier(n_threads),
    )
    _check_schedule(results, total, limit, window)


def test_processes_share_the_budget(namespace: str) -> None:
    limit, window, total, n_procs, n_threads = 10, 1.0, 40, 3, 4
    api_key = _api_key()
    counter = _MP.Value("i", 0)
    barrier = _MP.Barrier(n_procs * n_threads)  # all 12 callers start together
    queue = _MP.Queue()
    args = (REDIS_URL, namespace, api_key, limit, window, n_threads, counter, total, barrier)
    procs = [_MP.Process(target=_process_main, args=(queue, *args)) for _ in range(n_procs)]
    for proc in procs:
        proc.start()
    try:
        results = [item for _ in procs for item in queue.get(timeout=20)]
        for proc in procs:
            proc.join(timeout=5)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    _check_schedule(results, total, limit, window)


def test_max_wait_refuses_without_consuming(client: redis.Redis, namespace: str) -> None:
    limiter = SlidingWindowLimiter(client, _api_key(), 2, 1.0, namespace=namespace)
    first, second = limiter.reserve(), limiter.reserve()
    assert first == Reservation(granted=True, wait=0.0, slot_time=first.slot_time)
    assert second.granted and second.wait == 0.0

    refused = limiter.reserve(max_wait=0.1)
    assert not refused.granted
    assert 0.1 < refused.wait <= 1.0 + MARGIN
    assert refused.slot_time == pytest.approx(first.slot_time + 1.0 + MARGIN, abs=EPS)
    with pytest.raises(RateLimitExceeded) as excinfo:
        limiter.acquire_or_raise(max_wait=0.1)
    assert 0.1 < excinfo.value.wait <= refused.wait
    assert limiter.state()["waiting"] == 0

    # The refusals left no trace: the next slots are exactly those after first and second.
    third, fourth = limiter.reserve(), limiter.reserve(max_wait=1.5)
    assert third.granted and fourth.granted
    assert third.slot_time == pytest.approx(first.slot_time + 1.0 + MARGIN, abs=EPS)
    assert fourth.slot_time == pytest.approx(second.slot_time + 1.0 + MARGIN, abs=EPS)
    assert limiter.state()["waiting"] == 2


def test_keys_are_isolated_and_hashed(client: redis.Redis, namespace: str) -> None:
    key_a, key_b = _api_key(), _api_key()
    limiter_a = SlidingWindowLimiter(client, key_a, 2, 1.0, namespace=namespace)
    limiter_b = SlidingWindowLimiter(client, key_b, 2, 1.0, namespace=namespace)
    assert limiter_a.reserve(max_wait=0).granted
    assert limiter_a.reserve(max_wait=0).granted
    assert not limiter_a.reserve(max_wait=0).granted
    assert limiter_b.reserve(max_wait=0).granted
    assert limiter_b.reserve(max_wait=0).granted

    names = sorted(key.decode() for key in client.scan_iter(match=f"{namespace}:*"))
    expected = sorted(
        f"{namespace}:{hashlib.sha256(k.encode()).hexdigest()[:16]}" for k in (key_a, key_b)
    )
    assert names == expected
    for name in names:
        assert key_a not in name and key_b not in name
        assert all(value.isdigit() for value in client.lrange(name, 0, -1))
        assert 0 < client.pttl(name) <= 1000 * (1.0 + MARGIN) + 2


def test_limiter_for_uses_rate(client: redis.Redis) -> None:
    limiter = limiter_for(_api_key(), "3/2s", client)
    try:
        assert (limiter.limit, limiter.window, limiter.margin) == (3, 2.0, MARGIN)
        assert limiter.redis_key.startswith("orderflow:ratelimit:")
        slots = [limiter.reserve() for _ in range(4)]
        assert [r.wait == 0.0 for r in slots] == [True, True, True, False]
        assert slots[3].slot_time == pytest.approx(slots[0].slot_time + 2.0 + MARGIN, abs=EPS)
    finally:
        limiter.reset()


def test_state_reflects_waiting_reservations(client: redis.Redis, namespace: str) -> None:
    limiter = SlidingWindowLimiter(client, _api_key(), 2, 1.0, namespace=namespace)
    idle = {"limit": 2, "window": 1.0, "margin": MARGIN, "recent_slots": 0}
    assert limiter.state() == {**idle, "next_free_in": 0.0, "waiting": 0}

    r1, r2 = limiter.reserve(), limiter.reserve()
    state = limiter.state()
    assert (state["recent_slots"], state["waiting"]) == (2, 0)
    assert 0.9 < state["next_free_in"] <= 1.0 + MARGIN

    for _ in range(3):
        assert limiter.reserve().granted
    state = limiter.state()
    # The two immediate calls still count as recent even though three are queued behind them.
    assert (state["recent_slots"], state["waiting"]) == (2, 3)
    # The next free slot is the one a new reservation gets: second slot + 2 spans.
    r6 = limiter.reserve()
    assert r6.slot_time == pytest.approx(r2.slot_time + 2 * (1.0 + MARGIN), abs=EPS)
    assert r6.wait <= state["next_free_in"] <= r6.wait + 0.1
    assert r1.slot_time <= r2.slot_time

    limiter.reset()
    assert limiter.state() == {**idle, "next_free_in": 0.0, "waiting": 0}
    assert client.exists(limiter.redis_key) == 0
