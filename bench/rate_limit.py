"""Issue 3 benchmark: does the cluster-wide limiter keep every worker under the provider's limit
without wasting its budget?

    .venv/bin/python bench/rate_limit.py [--orders 60] [--configs 1x1 2x4 4x2 2x4-celery-only]
    .venv/bin/python bench/rate_limit.py --jittery [--orders 100] [--jitter 5-60]

Self-contained and local only (127.0.0.1): it creates a fresh database (PostgreSQL
`orderflow_bench`, created and dropped, or a SQLite file in a temp dir; --db), migrates and seeds
it, uses its own Redis database for broker, limiter and cache (flushed before each
configuration), runs the sandbox provider (orders.provider.sandbox, the real 2 req/s per key
rolling limit) in a process of its own that logs every arrival, and for each configuration
starts real prefork `celery worker` processes, creates the orders through
`orders.services.order_create` (the outbox publishes the pipeline after commit), waits for every
order to be terminal and stops the workers.

Configuration syntax:
`<workers>x<concurrency>[-celery-only|-limiter-only][+jitter][@NAME=VALUE ...]`
  -celery-only   cluster limiter off (PAYMENT_PROVIDER_CLUSTER_RATE_LIMIT=0): the baseline,
                 Celery's per-worker `rate_limit` alone;
  -limiter-only  cluster limiter on, Celery's per-worker `rate_limit` switched off on the running
                 workers (remote control `rate_limit <task> 0`), to measure what it costs;
  +jitter        the workers reach the sandbox through bench/jitter_proxy.py, a loopback proxy
                 that delays every chunk each way by a random `--jitter` ms (default 5-60): a
                 provider across the internet. Targets there: at most one 429 per 200 requests,
                 makespan at most 1.10 x floor. `--jittery` runs the pair that compares the
                 fixed margin (PAYMENT_PROVIDER_RATE_ADAPTIVE=0, the baseline) with the learnt
                 one in the same run;
  @NAME=VALUE    extra environment for the workers, e.g. @PAYMENT_PROVIDER_MAX_INLINE_WAIT=5.

Floor: a provider that admits `limit` requests per rolling `window` needs at least
`requests / (limit / window)` seconds for them (`requests` without the 429s). The makespan runs
from the first order accepted to the last order terminal; "req span" from the first provider
request to the last one (its own floor is one window less: the last burst needs no window after
it). Targets, with the limiter on: no 429, at most `limit` requests in any window, makespan at
most 1.05 x floor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:  # `python bench/rate_limit.py` puts bench/, not the project
    sys.path.insert(0, str(BASE_DIR))

from bench.jitter_proxy import JitterProxyProcess, parse_delay  # noqa: E402
from bench.support import (  # noqa: E402
    LOCMEM_EMAIL,
    django_database,
    environment,
    sandbox_process,
    seed,
)
from project.processes import ChildServer, Worker, stop_all  # noqa: E402

BENCH_DATABASE = "orderflow_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_CONFIGS = ["1x1", "2x4", "4x2", "2x4-celery-only"]
JITTERY_CONFIGS = ["2x4+jitter@PAYMENT_PROVIDER_RATE_ADAPTIVE=0", "2x4+jitter"]
JITTER_TARGET_RATIO = 1.10
JITTER_MAX_429_RATE = 1 / 200
PROVIDER_TASKS = ("orders.authorize_payment", "orders.confirm_order")
SKU = "BENCH-1"
RATE_LIMIT_WAIT_MESSAGE = "waiting for the provider's rate limit"  # orders/provider/client.py
PROVIDER_RATE = "2/s"  # the provider's contract (SPEC 4), per API key, rolling window
TARGET_RATIO = 1.05
DEFAULT_MARGIN = 0.04  # PAYMENT_PROVIDER_RATE_MARGIN's default in project/settings.py
POLL_INTERVAL = 0.25
_CONFIG_RE = re.compile(
    r"^(\d+)x(\d+)(-celery-only|-limiter-only)?(\+jitter)?((?:@[A-Z0-9_]+=[^@]*)*)$"
)


@dataclass(frozen=True)
class Config:
    name: str
    workers: int
    concurrency: int
    cluster_limiter: bool = True
    task_rate_limit: bool = True  # Celery's per-worker rate_limit on the provider tasks
    jitter: bool = False  # through the jittery link
    env: dict[str, str] = field(default_factory=dict)

    @property
    def baseline(self) -> bool:
        """No limiter, or over the jittery link the fixed margin alone (what the learnt one
        is measured against)."""
        fixed = self.env.get("PAYMENT_PROVIDER_RATE_ADAPTIVE") == "0"
        return not self.cluster_limiter or (self.jitter and fixed)


def parse_config(text: str) -> Config:
    match = _CONFIG_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"bad configuration {text!r}; expected e.g. 2x4, 2x4-celery-only, "
            "2x4@PAYMENT_PROVIDER_MAX_INLINE_WAIT=5"
        )
    workers, concurrency = int(match[1]), int(match[2])
    if not (1 <= workers <= 16 and 1 <= concurrency <= 32):
        raise argparse.ArgumentTypeError(f"{text!r}: 1-16 workers, concurrency 1-32")
    env = dict(item.split("=", 1) for item in match[5].split("@") if item)
    return Config(
        name=text,
        workers=workers,
        concurrency=concurrency,
        cluster_limiter=match[3] != "-celery-only",
        task_rate_limit=match[3] != "-limiter-only",
        jitter=bool(match[4]),
        env=env,
    )


def file_name(config_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", config_name)


def seed_customer():
    """A customer and one product with stock for any run."""
    return seed(products={SKU: "10.00"})


@contextlib.contextmanager
def workers_running(
    config: Config,
    base_env: dict[str, str],
    logdir: Path,
    timeout: float = 90.0,
    provider_url: str | None = None,
) -> Iterator[list[Worker]]:
    env = {
        **base_env,
        "PAYMENT_PROVIDER_CLUSTER_RATE_LIMIT": "1" if config.cluster_limiter else "0",
        **({"PAYMENT_PROVIDER_URL": provider_url} if provider_url else {}),
        **config.env,
    }
    from project.celery import app

    workers: list[Worker] = []
    try:
        for index in range(config.workers):
            workers.append(
                Worker(
                    env=env,
                    log_path=logdir / f"{file_name(config.name)}-worker{index}.log",
                    concurrency=config.concurrency,
                    name=f"bench{index}",
                    task_events=True,  # task-retried events: how often tasks re-scheduled
                )
            )
        # Ready = answers a remote-control ping (the control consumer starts after the task
        # consumer); independent of what the workers' logging prints.
        for worker in workers:
            worker.wait_ready(timeout, app=app)
        yield workers
    finally:
        stop_all(workers)  # SIGTERM all first, so their warm shutdowns overlap


def disable_task_rate_limits(expected_replies: int) -> None:
    from project.celery import app

    for task_name in PROVIDER_TASKS:
        replies = app.control.rate_limit(
            task_name, "0", reply=True, timeout=5, limit=expected_replies
        )
        if len(replies) < expected_replies:
            raise RuntimeError(
                f"only {len(replies)} workers confirmed rate_limit 0 for {task_name}"
            )


class RetryCounter:
    """Counts the workers' task-retried events: our limiter's re-schedules and 429 retries."""

    def __init__(self) -> None:
        self.reschedules = 0
        self.throttled = 0
        self._subscribed = threading.Event()
        self._receiver = None
        self._thread = threading.Thread(target=self._run, name="retry-counter", daemon=True)

    def _on_retried(self, event: dict) -> None:
        # Throttled and RateLimitWait do not survive pickling (keyword-only retry_after), so the
        # worker reports them as their base class, TransientError: tell them by the message.
        exception = event.get("exception") or ""
        if RATE_LIMIT_WAIT_MESSAGE in exception:
            self.reschedules += 1
        elif "429" in exception:
            self.throttled += 1

    def _run(self) -> None:
        from project.celery import app

        with app.connection_for_read() as connection:
            self._receiver = app.events.Receiver(
                connection, handlers={"task-retried": self._on_retried}
            )
            self._receiver.on_consume_ready = lambda *args, **kwargs: self._subscribed.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> RetryCounter:
        self._thread.start()
        if not self._subscribed.wait(timeout=10):
            raise RuntimeError("could not subscribe to the workers' task events")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True  # the capture loop checks it at least every 1 s
        self._thread.join(timeout=5)


# --- one configuration -----------------------------------------------------------------------


@dataclass
class Result:
    config: Config
    stats: dict
    arrivals: list[tuple[float, float]]
    statuses: Counter
    first_accepted: float
    last_terminal: float | None  # None: not every order reached a terminal status in time
    reschedules: int  # provider tasks re-scheduled by our limiter (RateLimitWait)
    throttled_retries: int  # provider tasks retried after a 429
    limit: int
    window: float
    margin: float  # the limiter's margin the workers ran with
    load: float  # 1-minute load average when the configuration ended

    @property
    def admitted(self) -> int:
        return self.stats["requests"] - self.stats["rejected_429"]

    @property
    def floor(self) -> float:
        return self.admitted * self.window / self.limit

    @property
    def admitted_arrivals(self) -> list[float]:
        """The arrivals the provider admitted: its own rule replayed on its own clock values."""
        admitted: list[float] = []
        for now, _ in self.arrivals:
            recent = [t for t in admitted[-self.limit :] if t > now - self.window]
            if len(recent) < self.limit:
                admitted.append(now)
        return admitted

    @property
    def unused(self) -> float:
        """Admitted requests' span beyond the tightest schedule the limiter allows (bursts of
        `limit` every window + margin): budget the pipeline left idle."""
        admitted = self.admitted_arrivals
        if not admitted:
            return 0.0
        bursts = -(-len(admitted) // self.limit)
        margin = self.margin if self.config.cluster_limiter else 0.0
        return admitted[-1] - admitted[0] - (bursts - 1) * (self.window + margin)

    @property
    def tightest(self) -> float | None:
        """Shortest time spanned by `limit + 1` consecutive arrivals (< window: a 429)."""
        times = [monotonic for monotonic, _ in self.arrivals]
        spans = [b - a for a, b in zip(times, times[self.limit :], strict=False)]
        return min(spans) if spans else None

    @property
    def makespan(self) -> float | None:
        return None if self.last_terminal is None else self.last_terminal - self.first_accepted

    @property
    def request_span(self) -> float:
        return self.arrivals[-1][0] - self.arrivals[0][0] if self.arrivals else 0.0

    @property
    def head(self) -> float:
        """First order accepted -> first provider request."""
        return self.arrivals[0][1] - self.first_accepted if self.arrivals else 0.0

    @property
    def tail(self) -> float | None:
        """Last provider request -> last order terminal."""
        if self.last_terminal is None or not self.arrivals:
            return None
        return self.last_terminal - self.arrivals[-1][1]

    def targets(self) -> dict[str, bool]:
        makespan = self.makespan
        if self.config.jitter:
            requests = self.stats["requests"]
            return {
                "<= 1 x 429 per 200 requests": self.stats["rejected_429"]
                <= JITTER_MAX_429_RATE * requests,
                f"<= {JITTER_TARGET_RATIO} x floor": makespan is not None
                and self.floor > 0
                and makespan <= JITTER_TARGET_RATIO * self.floor,
            }
        return {
            "no 429": self.stats["rejected_429"] == 0,
            f"<= {self.limit}/1s": self.stats["max_requests_in_any_1s"] <= self.limit,
            f"<= {TARGET_RATIO} x floor": makespan is not None
            and self.floor > 0
            and makespan <= TARGET_RATIO * self.floor,
        }


def run_config(
    config: Config,
    *,
    orders: int,
    timeout: float,
    user,
    sandbox: ChildServer,
    redis_client,
    base_env: dict[str, str],
    logdir: Path,
    limit: int,
    window: float,
    jitter_url: str | None = None,
) -> Result:
    from django.db.models import Max, Min

    from orders.models import TERMINAL_STATUSES, Order
    from orders.services import order_create

    redis_client.flushdb()  # broker queues, ETA leftovers and the limiter's slot log
    print(f"[{config.name}] starting {config.workers} x {config.concurrency} workers", flush=True)
    provider_url = jitter_url if config.jitter else None
    with workers_running(config, base_env, logdir, provider_url=provider_url) as workers:
        if not config.task_rate_limit:
            disable_task_rate_limits(len(workers))
        sandbox.call("reset")
        print(f"[{config.name}] creating {orders} orders", flush=True)
        with RetryCounter() as retries:
            ids = [
                order_create(
                    user=user, lines=[{"sku": SKU, "quantity": 1}], payment_token="tok_ok"
                )[0].pk
                for _ in range(orders)
            ]
            placed = Order.objects.filter(pk__in=ids)
            terminal = placed.filter(status__in=TERMINAL_STATUSES)
            deadline = time.monotonic() + timeout
            done = 0
            while done < orders and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL)
                done = terminal.count()
            if done < orders:
                print(f"[{config.name}] timeout: {done}/{orders} terminal after {timeout:.0f}s")
            stats, arrivals = sandbox.call("stats"), sandbox.call("arrivals")
    statuses = Counter(placed.values_list("status", flat=True))
    bounds = placed.aggregate(first=Min("created_at"), last=Max("updated_at"))
    margin = float(
        config.env.get("PAYMENT_PROVIDER_RATE_MARGIN")
        or base_env.get("PAYMENT_PROVIDER_RATE_MARGIN")
        or DEFAULT_MARGIN
    )
    return Result(
        config=config,
        stats=stats,
        arrivals=arrivals,
        statuses=statuses,
        first_accepted=bounds["first"].timestamp(),
        last_terminal=bounds["last"].timestamp() if done == orders else None,
        reschedules=retries.reschedules,
        throttled_retries=retries.throttled,
        limit=limit,
        window=window,
        margin=margin,
        load=os.getloadavg()[0],
    )


# --- report ----------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "timeout" if value is None else f"{value:.1f}"


def _ratio(value: float | None, floor: float) -> str:
    return "-" if value is None or floor <= 0 else f"{value / floor:.3f}"


def print_table(results: list[Result]) -> None:
    headers = [
        "config",
        "requests",
        "429s",
        "max/1s",
        "makespan s",
        "floor s",
        "makespan/floor",
        "req span s",
        "unused s",
        "confirmed",
        "re-schedules",
    ]
    rows = []
    for result in results:
        makespan = result.makespan
        rows.append(
            [
                result.config.name,
                str(result.stats["requests"]),
                str(result.stats["rejected_429"]),
                str(result.stats["max_requests_in_any_1s"]),
                _seconds(makespan),
                f"{result.floor:.1f}",
                _ratio(makespan, result.floor),
                f"{result.request_span:.1f}",
                f"{result.unused:.1f}",
                f"{result.statuses.get('confirmed', 0)}/{sum(result.statuses.values())}",
                str(result.reschedules),
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
        checks = result.targets()
        verdict = ", ".join(f"{name} {'ok' if held else 'MISSED'}" for name, held in checks.items())
        scope = "baseline (no target)" if result.config.baseline else "targets"
        tightest = "-" if result.tightest is None else f"{result.tightest:.3f}s"
        print(
            f"{result.config.name}: {scope}: {verdict}. head {result.head:.2f}s (accepted -> "
            f"1st request), tail {_seconds(result.tail)}s (last request -> terminal), "
            f"tightest {result.limit + 1} arrivals {tightest}, 429 retries "
            f"{result.throttled_retries}, payments {result.stats['payments']}, captures "
            f"{result.stats['captures']}, statuses {dict(result.statuses)}, load {result.load:.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=60)
    parser.add_argument("--configs", nargs="+", type=parse_config, default=None)
    parser.add_argument("--db", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--database-name",
        default=BENCH_DATABASE,
        help=f"the PostgreSQL database created and dropped (default {BENCH_DATABASE})",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="per configuration (default 3 x orders + 60 s)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every configuration's workers (repeatable)",
    )
    parser.add_argument(
        "--sandbox-priority",
        type=int,
        default=10,
        metavar="N",
        help="run the sandbox at nice -N (default 10): a real provider does not share the "
        "workers' CPUs, so its arrival times should not wait for them; 0 to share fairly",
    )
    parser.add_argument(
        "--jittery",
        action="store_true",
        help=f"run the jittery-link pair: {' '.join(JITTERY_CONFIGS)}",
    )
    parser.add_argument(
        "--jitter",
        type=parse_delay,
        default=(0.005, 0.06),
        metavar="MS-MS",
        help="one-way delay per chunk of the +jitter link (default 5-60 ms)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs")
    parser.add_argument(
        "--dump-arrivals",
        type=Path,
        metavar="DIR",
        help="write each configuration's provider arrival times (wall clock) to DIR/<config>.json",
    )
    args = parser.parse_args(argv)
    configs = args.configs or [
        parse_config(name) for name in (JITTERY_CONFIGS if args.jittery else DEFAULT_CONFIGS)
    ]
    if not 1 <= args.orders <= 5000:
        parser.error("--orders: 1-5000")
    timeout = args.timeout or 3 * args.orders + 60
    extra_env = dict(item.split("=", 1) for item in args.worker_env)

    from project.ratelimit import parse_rate

    limit, window = parse_rate(PROVIDER_RATE)
    env = environment(
        settings="project.settings",
        redis_url=args.redis_url,
        PAYMENT_PROVIDER_RATE_LIMIT=PROVIDER_RATE,
        EMAIL_BACKEND=LOCMEM_EMAIL,
        **extra_env,
    )
    workdir = Path(tempfile.mkdtemp(prefix="orderflow-bench-"))
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        # The sandbox's port is known only once it binds, so start it before the environment.
        sandbox = stack.enter_context(
            sandbox_process(
                rate_limit=limit,
                window=window,
                log_arrivals=True,
                priority=args.sandbox_priority,
            )
        )
        proxy = None
        if any(config.jitter for config in configs):
            upstream = urlsplit(sandbox.url)
            proxy = JitterProxyProcess((upstream.hostname, upstream.port), args.jitter)
            stack.callback(proxy.stop)
            print(f"jittery link {proxy.url} -> {sandbox.url}: {args.jitter} s one way per chunk")
        base_env = stack.enter_context(
            django_database(
                args.database_name,
                {**env, "PAYMENT_PROVIDER_URL": sandbox.url},
                kind=args.db,
                workdir=workdir,
            )
        )
        print(f"database {base_env['DATABASE_URL']}; redis {args.redis_url}; logs {workdir}")
        user = seed_customer()
        redis_client = redis.Redis.from_url(args.redis_url)
        for config in configs:
            results.append(
                run_config(
                    config,
                    orders=args.orders,
                    timeout=timeout,
                    user=user,
                    sandbox=sandbox,
                    redis_client=redis_client,
                    base_env=base_env,
                    logdir=workdir,
                    limit=limit,
                    window=window,
                    jitter_url=proxy.url if proxy else None,
                )
            )
            print_table(results[-1:])
            if args.dump_arrivals:
                args.dump_arrivals.mkdir(parents=True, exist_ok=True)
                path = args.dump_arrivals / f"{file_name(config.name)}.json"
                path.write_text(json.dumps([wall for _, wall in results[-1].arrivals]))
    print(f"\n{args.orders} orders per configuration, {os.cpu_count()} CPUs")
    print_table(results)
    if args.keep_logs:
        print(f"worker logs kept in {workdir}")
    else:
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    limited = [result for result in results if not result.config.baseline]
    return 0 if all(all(result.targets().values()) for result in limited) else 1


if __name__ == "__main__":
    sys.exit(main())
