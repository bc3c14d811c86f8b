"""Tests for orders.ratelimit against the real Redis (DB 14 unless TEST_REDIS_URL is set).

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

from orders.provider.client import PaymentProvider
from orders.provider.errors import RateLimitWait, Throttled
from project.ratelimit import (
    FairLimiter,
    RateLimitExceeded,
    Reservation,
    SlidingWindowLimiter,
    limiter_for,
    parse_rate,
    parse_weights,
)

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
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
    results: list[tuple[float, float]],
    total: int,
    limit: int,
    window: float,
    *,
    send_times: bool = True,
) -> float:
    assert len(results) == total
    sent = [stamp for stamp, _ in results]
    slots = sorted(slot for _, slot in results)
    # On the Redis clock the guarantee is exact, margin included.
    for i in range(len(slots) - limit):
        assert slots[i + limit] - slots[i] >= window + MARGIN - EPS
    if not send_times:
        # The grants alone (the fair tests' threads poll, which on a loaded machine delays
        # their sends beyond any margin: what the provider sees is bench/rate_limit.py's job).
        rate = (total - limit) / (slots[-1] - slots[0])
        assert rate >= 0.95 * limit / window, f"throughput {rate:.2f}/s too low"
        return rate
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
    assert _pick(limiter.state(), idle) == idle
    assert _pick(limiter.state(), ["next_free_in", "waiting"]) == {"next_free_in": 0, "waiting": 0}

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
    assert _pick(limiter.state(), idle) == idle
    assert _pick(limiter.state(), ["next_free_in", "waiting"]) == {"next_free_in": 0, "waiting": 0}
    assert client.exists(limiter.redis_key) == 0


def _pick(state: dict, names) -> dict:
    return {name: state[name] for name in names}


# --- fair share ------------------------------------------------------------------------------
#
# The policy tests are deterministic in their order: one slot every 0.2 s (so only one caller
# can be served at a time), a long presence (every registered caller counts as waiting in
# place), registration behind a hold (penalize) so nothing is granted until every ticket is in
# line, then every waiting caller asks again, in an adversarial order (newest first), until all
# are granted. Only the caller whose turn it is gets the slot, so the grant log is the fair order.


def _fair(client: redis.Redis, namespace: str, **options: Any) -> FairLimiter:
    defaults = {"lookahead": 0.05, "presence": 60.0, "grant_log": 1000}
    return FairLimiter(
        client, _api_key(), 1, 0.2, margin=0.0, namespace=namespace, **{**defaults, **options}
    )


def _drain(
    limiter: FairLimiter, calls: list[tuple[str, str]], weights=None, stop_after: int = 0
) -> list[str]:
    """Register `calls` ((customer, lane), in this order) while held, then serve them.
    Returns "customer/lane" in grant order."""
    weights = weights or {}
    tickets = [
        (customer, lane, f"{customer}-{lane}-{i}") for i, (customer, lane) in enumerate(calls)
    ]
    limiter.penalize(0.3)
    for customer, lane, ticket in tickets:
        step = limiter.request(
            customer=customer,
            lane=lane,
            ticket=ticket,
            weight=weights.get(customer, 1.0),
            max_wait=60,
        )
        assert not step.granted and step.poll is not None
    pending = list(tickets)
    while pending and len(pending) > len(tickets) - (stop_after or len(tickets)):
        granted = []
        for customer, lane, ticket in reversed(pending):
            step = limiter.request(
                customer=customer,
                lane=lane,
                ticket=ticket,
                weight=weights.get(customer, 1.0),
                max_wait=60,
            )
            if step.granted:
                granted.append(ticket)
        pending = [item for item in pending if item[2] not in granted]
        time.sleep(0.01)
    return [f"{grant.customer}/{grant.lane}" for grant in limiter.grants()]


def test_two_customers_interleave(client: redis.Redis, namespace: str) -> None:
    # bob's batch is all in line before alice's orders arrive; first come, first served would
    # grant bob's six first.
    order = _drain(_fair(client, namespace), [("bob", "batch")] * 6 + [("alice", "batch")] * 3)
    customers = [entry.split("/")[0] for entry in order]
    assert customers[:6].count("alice") == 3, customers
    assert all(customers[i] != customers[i + 1] for i in range(5)), customers
    assert customers[6:] == ["bob"] * 3


def test_weights_hold(client: redis.Redis, namespace: str) -> None:
    order = _drain(
        _fair(client, namespace),
        [("bob", "batch")] * 8 + [("alice", "batch")] * 8,
        weights={"bob": 2.0},
    )
    customers = [entry.split("/")[0] for entry in order]
    # While both wait, bob gets two slots for each of alice's: 2:1 in every prefix.
    for end in range(3, 13, 3):
        assert customers[:end].count("bob") == 2 * end // 3, customers
    assert customers.count("bob") == 8


def test_single_orders_go_before_the_customers_batch(client: redis.Redis, namespace: str) -> None:
    order = _drain(
        _fair(client, namespace),
        [("bob", "batch")] * 4 + [("bob", "single")] * 2 + [("alice", "batch")] * 2,
    )
    bobs = [entry for entry in order if entry.startswith("bob/")]
    assert bobs == ["bob/single"] * 2 + ["bob/batch"] * 4, order
    # The lanes order one customer's calls; they do not put bob ahead of alice.
    assert [entry.split("/")[0] for entry in order[:4]].count("alice") == 2, order


def test_fifo_within_a_lane(client: redis.Redis, namespace: str) -> None:
    limiter = _fair(client, namespace)
    _drain(limiter, [("bob", "batch")] * 3 + [("bob", "single")] * 2 + [("bob", "batch")] * 2)
    tickets = [grant.ticket for grant in limiter.grants()]
    assert tickets == [f"bob-single-{i}" for i in (3, 4)] + [
        f"bob-batch-{i}" for i in (0, 1, 2, 5, 6)
    ]
    assert limiter.state()["tickets"] == 0 and limiter.state()["customers"] == {}


def test_no_starvation_behind_a_long_batch(client: redis.Redis, namespace: str) -> None:
    order = _drain(
        _fair(client, namespace), [("bob", "batch")] * 60 + [("alice", "single")], stop_after=3
    )
    assert order.index("alice/single") <= 1, order[:5]


def test_waiting_callers_are_visible(client: redis.Redis, namespace: str) -> None:
    limiter = _fair(client, namespace)
    limiter.penalize(5.0)
    for i in range(3):
        limiter.request(customer="bob", lane="batch", ticket=f"b{i}", max_wait=60)
    limiter.request(customer="alice", lane="single", ticket="a0", max_wait=60)
    state = limiter.state()
    assert state["tickets"] == 4 and state["waiting"] == 4
    assert {
        name: (entry["single"], entry["batch"]) for name, entry in state["customers"].items()
    } == {
        "bob": (0, 3),
        "alice": (1, 0),
    }
    assert 4.5 < state["hold_in"] <= 5.0
    assert state["provider_429s"] == 1


def test_absent_caller_keeps_its_place_and_a_dead_one_expires(
    client: redis.Redis, namespace: str
) -> None:
    limiter = _fair(client, namespace, presence=0.1, ticket_grace=0.3)
    limiter.penalize(0.4)
    # b0 is first in bob's lane but its caller goes away (re-scheduled) and then dies.
    first = limiter.request(customer="bob", lane="batch", ticket="b0", max_wait=0)
    assert first.poll is None  # told to come back: away
    limiter.request(customer="bob", lane="batch", ticket="b1", max_wait=60)
    time.sleep(0.45)
    # b1 is present and b0 is not: b1 gets the slot rather than leave it idle, and b0 keeps
    # its place while it is not overdue.
    assert limiter.request(customer="bob", lane="batch", ticket="b1", max_wait=60).granted
    assert limiter.state()["tickets"] == 1
    time.sleep(0.4)  # b0's grace is over: the next caller drops it
    assert limiter.request(customer="bob", lane="batch", ticket="b2", max_wait=60).granted
    assert limiter.state()["tickets"] == 0


def test_reschedule_estimates_the_turn(client: redis.Redis, namespace: str) -> None:
    limiter = FairLimiter(client, _api_key(), 2, 1.0, margin=0.0, namespace=namespace)
    for i in range(2):
        assert limiter.request(customer="bob", lane="batch", ticket=f"g{i}", max_wait=2).granted
    steps = [
        limiter.request(customer="bob", lane="batch", ticket=f"b{i}", max_wait=2) for i in range(8)
    ]
    assert [step.rank for step in steps] == list(range(8))
    # Two slots per second from one second on: ticket k waits about 1 + k / 2 seconds.
    for k, step in enumerate(steps):
        assert step.wait == pytest.approx(1.0 + k / 2, abs=0.05)
        assert (step.poll is None) == (step.wait > 2)
    with pytest.raises(RateLimitExceeded) as excinfo:
        limiter.acquire_turn(customer="bob", lane="batch", ticket="b7", max_wait=2)
    # Back a little (max_wait / 2) before the turn, to poll for it in place.
    assert excinfo.value.wait == pytest.approx(steps[7].wait - 1.0, abs=0.05)


def _fair_callers(
    limiter: FairLimiter, callers: list[tuple[str, str]], calls_each: int
) -> list[tuple[float, float, str]]:
    """Threads that each make `calls_each` acquire_turn calls: (sent_at, slot, customer)."""
    results: list[tuple[float, float, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(callers))

    def work(customer: str, lane: str) -> None:
        barrier.wait()
        for _ in range(calls_each):
            reservation = limiter.acquire_turn(customer=customer, lane=lane, max_wait=30)
            sent_at = time.time()
            with lock:
                results.append((sent_at, reservation.slot_time, customer))

    pool = limiter._client.connection_pool
    for held in [pool.get_connection() for _ in range(len(callers))]:
        pool.release(held)
    threads = [threading.Thread(target=work, args=caller) for caller in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_lone_customer_gets_the_whole_budget(client: redis.Redis, namespace: str) -> None:
    limit, window, total = 10, 1.0, 40
    limiter = FairLimiter(client, _api_key(), limit, window, margin=MARGIN, namespace=namespace)
    results = _fair_callers(limiter, [("bob", "batch")] * 8, total // 8)
    _check_schedule(
        [(sent, slot) for sent, slot, _ in results], total, limit, window, send_times=False
    )


def test_two_customers_share_the_budget_exactly(client: redis.Redis, namespace: str) -> None:
    """Real callers in threads: the rolling window holds on Redis's clock, no budget is left
    idle, and both customers get about half while both wait."""
    limit, window = 10, 1.0
    limiter = FairLimiter(
        client,
        _api_key(),
        limit,
        window,
        margin=MARGIN,
        namespace=namespace,
        grant_log=1000,
    )
    # Enough callers that each customer could take every slot of a burst alone.
    results = _fair_callers(limiter, [("bob", "batch")] * 10 + [("alice", "single")] * 5, 4)
    _check_schedule(
        [(sent, slot) for sent, slot, _ in results], 60, limit, window, send_times=False
    )
    grants = [grant.customer for grant in limiter.grants()]
    # The first burst goes to whoever asked first (no slot waits for a latecomer); from then
    # on both wait and share each burst of 10, about half and half (a caller that overslept
    # its poll on a loaded machine misses a turn, so the bounds are loose; the order itself is
    # tested exactly above).
    shared = grants[limit : 4 * limit]
    assert 10 <= shared.count("alice") <= 20, grants
    assert grants[4 * limit :].count("alice") <= 20 - 10


# --- learning from the provider --------------------------------------------------------------


def test_penalize_pushes_the_next_slots_out(client: redis.Redis, namespace: str) -> None:
    limiter = SlidingWindowLimiter(client, _api_key(), 2, 1.0, namespace=namespace, adaptive=True)
    first = limiter.reserve()
    assert first.wait == 0.0
    held = limiter.penalize(1.5)
    assert 1.4 < held <= 1.5
    after = limiter.reserve()
    assert after.slot_time == pytest.approx(first.slot_time + 1.5, abs=0.1)
    # And for a while the window is wider by the floor a 429 left (10 ms).
    third = limiter.reserve()
    assert third.slot_time >= first.slot_time + 1.5
    fourth = limiter.reserve()
    assert fourth.slot_time - after.slot_time >= 1.0 + MARGIN + 0.0099
    assert limiter.state()["provider_429s"] == 1


def test_observed_round_trips_widen_the_window_per_request(
    client: redis.Redis, namespace: str
) -> None:
    limiter = SlidingWindowLimiter(
        client, _api_key(), 2, 1.0, margin=0.01, namespace=namespace, adaptive=True
    )
    fast, slow = limiter.reserve(), limiter.reserve()
    # The fast one answered in 5 ms, the slow one in 105 ms (sent on time): it may have arrived
    # up to 100 ms late, so the slot a window after it keeps 100 ms further away.
    limiter.observe(fast, sent_at=fast.send_at, answered_at=fast.send_at + 0.005)
    assert limiter.observe(slow, sent_at=slow.send_at, answered_at=slow.send_at + 0.105) == (
        pytest.approx(0.1, abs=0.001)
    )
    after_fast, after_slow = limiter.reserve(), limiter.reserve()
    assert after_fast.slot_time - fast.slot_time == pytest.approx(1.0 + 0.01, abs=EPS)
    assert after_slow.slot_time - slow.slot_time == pytest.approx(1.0 + 0.1, abs=EPS)
    state = limiter.state()
    assert state["fastest_rtt"] == pytest.approx(0.005, abs=EPS)


def test_fixed_margin_ignores_round_trips(client: redis.Redis, namespace: str) -> None:
    limiter = SlidingWindowLimiter(client, _api_key(), 1, 1.0, margin=0.01, namespace=namespace)
    first = limiter.reserve()
    assert limiter.observe(first, sent_at=first.send_at, answered_at=first.send_at + 0.2) == 0
    assert limiter.reserve().slot_time - first.slot_time == pytest.approx(1.01, abs=EPS)


def test_client_reports_a_429_to_the_limiter(client: redis.Redis, namespace: str, sandbox_server):
    """A real provider (the sandbox, 2 req/s) behind a limiter that wrongly allows 5: the 429
    it draws holds every slot for its Retry-After, and the task is told to come back."""
    sandbox_server.reset()
    limiter = FairLimiter(client, _api_key(), 5, 1.0, namespace=namespace, adaptive=True)
    provider = PaymentProvider(
        base_url=sandbox_server.url,
        api_key="sk_test_ratelimit",
        timeout=5,
        rate_limiter=limiter,
        max_inline_wait=0.5,
        customer="42",
    )
    for i in range(2):
        provider.authorize(
            amount=1, currency="EUR", source="tok_ok", reference=f"r{i}", idempotency_key=f"k{i}"
        )
    with pytest.raises(Throttled) as excinfo:
        provider.authorize(
            amount=1, currency="EUR", source="tok_ok", reference="r2", idempotency_key="k2"
        )
    assert excinfo.value.retry_after >= 1
    state = limiter.state()
    assert state["provider_429s"] == 1 and state["hold_in"] > 0.5
    assert state["fastest_rtt"] is not None  # round trips were reported too
    # The next call is not sent into the hold: it is re-scheduled for after it.
    with pytest.raises(RateLimitWait) as waited:
        provider.authorize(
            amount=1, currency="EUR", source="tok_ok", reference="r3", idempotency_key="k3"
        )
    assert waited.value.retry_after > 0.2
    assert sandbox_server.stats()["requests"] == 3


def test_parse_weights() -> None:
    assert parse_weights("") == {}
    assert parse_weights("42=2, 17=0.5") == {"42": 2.0, "17": 0.5}
    for bad in ("42", "=2", "42=0", "42=-1", "42=x", "42=inf"):
        with pytest.raises(ValueError):
            parse_weights(bad)
