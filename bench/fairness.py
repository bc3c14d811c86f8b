"""Issue 11 benchmark: does one customer's batch leave the provider's budget to everyone else,
without wasting any of it?

    .venv/bin/python bench/fairness.py [--batch 200] [--every 5] [--configs ...]

One customer (bob) places a batch of `--batch` orders; while it is in flight a second customer
(alice) places a single order every `--every` seconds. Reported per configuration: alice's
latency from accepted to terminal (p50, p99, max: the orders' created_at -> updated_at in the
database), the batch's makespan (first batch order accepted -> last terminal) against the floor
(every provider request the provider admitted in the configuration, bob's and alice's, at
2 per second), the provider's 429s, and how the limiter's own grant log shared the slots
(grants per customer). Targets with the fair limiter: alice p99 <= 3 s, makespan <= 1.05 x
floor, no 429. The baseline in the same run is the first-come-first-served limiter
(`@PAYMENT_PROVIDER_LIMITER=fifo`).

The setup is bench/rate_limit.py's (its workers and configurations are imported, not copied;
the processes come from project/processes.py and bench/support.py): a fresh PostgreSQL database
(created and dropped; --db sqlite works too), its own Redis database (flushed before each
configuration), the sandbox provider with the real 2 req/s rolling limit in a process of its
own, real prefork `celery worker` processes per configuration, orders created through
`orders.services` (`batch_create`, `order_create`: the outbox publishes after commit), and the
configuration syntax `<workers>x<concurrency>[-limiter-only][@NAME=VALUE ...]`.

The customer and the lane reach the limiter only if the services pass them to `get_provider`
(`customer=str(order.user_id), lane="batch" if order.batch_id else "single"`); the report says
which customers the limiter saw, so a run without that wiring shows one customer, "-".
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import redis

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:  # `python bench/fairness.py` puts bench/, not the project
    sys.path.insert(0, str(BASE_DIR))

from bench.rate_limit import (  # noqa: E402
    PROVIDER_RATE,
    SKU,
    Config,
    disable_task_rate_limits,
    parse_config,
    seed_customer,
    workers_running,
)
from bench.support import (  # noqa: E402
    LOCMEM_EMAIL,
    django_database,
    environment,
    percentile,
    sandbox_process,
    seed,
)
from project.processes import ChildServer  # noqa: E402

BENCH_DATABASE = "orderflow_bench_fairness"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
DEFAULT_CONFIGS = ["2x4@PAYMENT_PROVIDER_LIMITER=fifo", "2x4"]
TARGET_P99 = 3.0
TARGET_RATIO = 1.05
POLL_INTERVAL = 0.2
FIRST_SINGLE_AFTER = 2.0  # seconds after the batch: it is in flight by then


@dataclass
class Result:
    config: Config
    singles: list[float]  # alice's latencies, accepted -> terminal, seconds
    singles_placed: int
    single_statuses: Counter
    batch_statuses: Counter
    makespan: float | None  # None: the batch did not finish in time
    stats: dict
    grants: Counter  # the limiter's grant log: grants per customer
    load: float

    @property
    def admitted(self) -> int:
        return self.stats["requests"] - self.stats["rejected_429"]

    @property
    def floor(self) -> float:
        limit, window = 2, 1.0  # PROVIDER_RATE
        return self.admitted * window / limit

    @property
    def fifo(self) -> bool:
        return self.config.env.get("PAYMENT_PROVIDER_LIMITER") == "fifo"

    def targets(self) -> dict[str, bool]:
        p99 = percentile(self.singles, 0.99) if self.singles else None
        return {
            f"p99 <= {TARGET_P99:g} s": p99 is not None
            and p99 <= TARGET_P99
            and len(self.singles) == self.singles_placed,
            f"makespan <= {TARGET_RATIO} x floor": self.makespan is not None
            and self.makespan <= TARGET_RATIO * self.floor,
            "no 429": self.stats["rejected_429"] == 0,
        }


def _body() -> dict:
    return {"lines": [{"sku": SKU, "quantity": 1}], "payment_token": "tok_ok"}


def run_config(
    config: Config,
    *,
    batch_size: int,
    every: float,
    timeout: float,
    bob,
    alice,
    sandbox: ChildServer,
    redis_client,
    base_env: dict[str, str],
    logdir: Path,
) -> Result:
    from django.conf import settings
    from django.db.models import Max, Min

    from orders.models import TERMINAL_STATUSES, Order
    from orders.services import batch_create, order_create
    from project.ratelimit import SlidingWindowLimiter, parse_rate
    from project.redis_client import get_redis

    redis_client.flushdb()  # broker queues, ETA leftovers and the limiter's state
    print(f"[{config.name}] starting {config.workers} x {config.concurrency} workers", flush=True)
    with workers_running(config, base_env, logdir) as workers:
        if not config.task_rate_limit:
            disable_task_rate_limits(len(workers))
        sandbox.call("reset")
        print(f"[{config.name}] batch of {batch_size}, a single order every {every:g} s")
        batch, _ = batch_create(user=bob, orders=[_body() for _ in range(batch_size)])
        batch_orders = Order.objects.filter(batch=batch)
        batch_terminal = batch_orders.filter(status__in=TERMINAL_STATUSES)
        single_ids: list[str] = []
        started = time.monotonic()
        deadline = started + timeout
        next_single = started + FIRST_SINGLE_AFTER
        done = 0
        while done < batch_size and time.monotonic() < deadline:
            if time.monotonic() >= next_single:
                order, _ = order_create(user=alice, **_body())
                single_ids.append(order.pk)
                next_single += every
            time.sleep(POLL_INTERVAL)
            done = batch_terminal.count()
        singles = Order.objects.filter(pk__in=single_ids)
        # The singles placed last may still be on their way.
        single_deadline = time.monotonic() + 60
        while (
            singles.filter(status__in=TERMINAL_STATUSES).count() < len(single_ids)
            and time.monotonic() < single_deadline
        ):
            time.sleep(POLL_INTERVAL)
        stats = sandbox.call("stats")
        # The limiter's own log of who got each slot (same Redis key whatever the algorithm).
        limit, window = parse_rate(PROVIDER_RATE)
        grant_log = SlidingWindowLimiter(
            get_redis(), settings.PAYMENT_PROVIDER_API_KEY, limit, window
        ).grants()
    bounds = batch_orders.aggregate(first=Min("created_at"), last=Max("updated_at"))
    latencies = [
        (order.updated_at - order.created_at).total_seconds()
        for order in singles.filter(status__in=TERMINAL_STATUSES).order_by("created_at")
    ]
    return Result(
        config=config,
        singles=latencies,
        singles_placed=len(single_ids),
        single_statuses=Counter(singles.values_list("status", flat=True)),
        batch_statuses=Counter(batch_orders.values_list("status", flat=True)),
        makespan=(bounds["last"] - bounds["first"]).total_seconds() if done == batch_size else None,
        stats=stats,
        grants=Counter(grant.customer for grant in grant_log),
        load=os.getloadavg()[0],
    )


def print_table(results: list[Result], names: dict[str, str]) -> None:
    headers = [
        "config",
        "singles",
        "p50 s",
        "p99 s",
        "max s",
        "makespan s",
        "floor s",
        "makespan/floor",
        "requests",
        "429s",
        "grants per customer",
    ]
    rows = []
    for result in results:
        singles = result.singles
        rows.append(
            [
                result.config.name + (" (baseline)" if result.fifo else ""),
                f"{len(singles)}/{result.singles_placed}",
                f"{percentile(singles, 0.5):.2f}" if singles else "-",
                f"{percentile(singles, 0.99):.2f}" if singles else "-",
                f"{max(singles):.2f}" if singles else "-",
                "timeout" if result.makespan is None else f"{result.makespan:.1f}",
                f"{result.floor:.1f}",
                "-" if result.makespan is None else f"{result.makespan / result.floor:.3f}",
                str(result.stats["requests"]),
                str(result.stats["rejected_429"]),
                ", ".join(
                    f"{names.get(customer, customer)} {count}"
                    for customer, count in sorted(result.grants.items())
                ),
            ]
        )
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print()
    for result in results:
        verdict = ", ".join(
            f"{name} {'ok' if held else 'MISSED'}" for name, held in result.targets().items()
        )
        scope = "baseline (no target)" if result.fifo else "targets"
        print(
            f"{result.config.name}: {scope}: {verdict}. batch {dict(result.batch_statuses)}, "
            f"singles {dict(result.single_statuses)}, load {result.load:.1f}"
        )
        print(
            f"{result.config.name}: single orders' latencies in the order placed (s): "
            + " ".join(f"{latency:.1f}" for latency in result.singles)
        )
        if set(result.grants) <= {"-"}:
            print(
                f"{result.config.name}: the limiter saw no customer: the services do not pass "
                "customer/lane to get_provider yet, so every call shares one lane"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=200, help="bob's batch size (1-500)")
    parser.add_argument("--every", type=float, default=5.0, help="alice orders every N s")
    parser.add_argument("--configs", nargs="+", type=parse_config, default=None)
    parser.add_argument("--db", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--database-name", default=BENCH_DATABASE)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--timeout", type=float, default=None, help="per configuration (default 2 x batch + 60 s)"
    )
    parser.add_argument(
        "--sandbox-priority",
        type=int,
        default=10,
        metavar="N",
        help="run the sandbox at nice -N, as bench/rate_limit.py does (0 to share fairly)",
    )
    args = parser.parse_args(argv)
    configs = args.configs or [parse_config(name) for name in DEFAULT_CONFIGS]
    if not 1 <= args.batch <= 500:
        parser.error("--batch: 1-500")
    timeout = args.timeout or 2 * args.batch + 60
    from project.ratelimit import parse_rate

    limit, window = parse_rate(PROVIDER_RATE)
    env = environment(
        settings="project.settings",
        redis_url=args.redis_url,
        PAYMENT_PROVIDER_RATE_LIMIT=PROVIDER_RATE,
        EMAIL_BACKEND=LOCMEM_EMAIL,
    )
    workdir = Path(tempfile.mkdtemp(prefix="orderflow-fairness-"))
    results: list[Result] = []
    with (
        sandbox_process(rate_limit=limit, window=window, priority=args.sandbox_priority) as sandbox,
        django_database(
            args.database_name,
            {**env, "PAYMENT_PROVIDER_URL": sandbox.url},
            kind=args.db,
            workdir=workdir,
        ) as base_env,
    ):
        print(f"database {base_env['DATABASE_URL']}; redis {args.redis_url}; logs {workdir}")
        bob = seed_customer()
        alice = seed(username="alice", products={})
        names = {str(bob.pk): "bob", str(alice.pk): "alice"}
        redis_client = redis.Redis.from_url(args.redis_url)
        for config in configs:
            results.append(
                run_config(
                    config,
                    batch_size=args.batch,
                    every=args.every,
                    timeout=timeout,
                    bob=bob,
                    alice=alice,
                    sandbox=sandbox,
                    redis_client=redis_client,
                    base_env=base_env,
                    logdir=workdir,
                )
            )
            print_table(results[-1:], names)
    print(f"\nbatch {args.batch}, a single order every {args.every:g} s, {os.cpu_count()} CPUs")
    print_table(results, names)
    for path in workdir.iterdir():
        path.unlink()
    workdir.rmdir()
    measured = [result for result in results if not result.fifo]
    return 0 if all(all(result.targets().values()) for result in measured) else 1


if __name__ == "__main__":
    sys.exit(main())
