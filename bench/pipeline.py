"""Issue 6 benchmark: what does the pipeline itself cost, with the provider's rate limit out of
the way, next to a bare Celery canvas of the same shape?

    .venv/bin/python bench/pipeline.py [--orders 500] [--concurrency 2] [--profile]

One run, one prefork worker (concurrency 2) per measurement, started fresh, in rounds (a, b, a,
b: the machine's drift hits both alike; default 2 x 250 orders per flow), consuming the
product's three queues with the real product tasks plus bench/bench_tasks.py's no-op tasks:

  (a) baseline  a bare canvas of the issue-6 pipeline's shape, sent from here: chain(task,
                chord(one task per line -> callback), task, task) with no-op bodies, on the same
                broker, queues and result backend (django-db: state STARTED and SUCCESS rows,
                the chord counter) in the same database; kept as it was, so that ratios stay
                comparable across the pipeline's reshapes;
  (b) product   real orders (2 lines, tok_ok) created through `orders.services.order_create`
                (order, lines, timeline event and outbox row in one transaction; the outbox
                publishes orders.start_pipeline after commit), then the real pipeline:
                start_pipeline -> authorize_payment -> check_cart_line x 2 (the last one sends
                confirm_order) -> confirm_order (its outcome's outbox row sends notify), against
                the sandbox provider with no rate limit and no latency (Celery's per-task
                rate_limit raised to 100000/s, the cluster-wide limiter off).

For each: 3 warm-up orders, then `--sequential` orders one at a time on the idle pipeline
(latency accepted -> terminal, i.e. the confirm step's result stored: the pipeline's own
latency), then a burst of `--orders` orders queued while the worker's consumers are paused
(remote control), so that submitting them (the API's cost, see bench/api.py) does not compete
for the CPUs, and released at once: throughput = orders / (release -> last notify done), and
each order's latency from the release to terminal (p50, p99: mostly queueing). CPU seconds per
order of each process come from /proc, transactions and rows from pg_stat_database. With
--profile, every pool child runs bench_tasks' sampling profiler (it slows the worker down: use
the plain run's throughput, the profile's proportions) and the run prints where a task's wall
time goes, per order and per task. --setting NAME=JSON overrides a product setting in every
process (what-if runs, e.g. --setting CELERY_DB_REUSE_MAX=1000).

Self-contained and local only (127.0.0.1): it creates and drops the PostgreSQL database
`orderflow_bench_pipeline`, uses its own Redis database (flushed before each measurement and at
the end) and runs the sandbox provider in a process of its own. Target: (b) >= 0.6 x (a).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
import redis
from celery import chain, chord
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:  # `python bench/pipeline.py` puts bench/, not the project
    sys.path.insert(0, str(BASE_DIR))

from bench.support import (  # noqa: E402
    django_database,
    environment,
    percentile,
    production_mode,
    sandbox_process,
    seed,
)
from project.processes import POSTGRES_ADMIN_DSN, Worker, wait_until  # noqa: E402

BENCH_DATABASE = "orderflow_bench_pipeline"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
LINES = [{"sku": "BENCH-A", "quantity": 1}, {"sku": "BENCH-B", "quantity": 2}]
TARGET_RATIO = 0.6
WARMUP_ORDERS = 3
POLL_INTERVAL = 0.01  # waiting for one order on the idle pipeline
BURST_POLL_INTERVAL = 0.5
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- CPU accounting from /proc -----------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) "


def process_cpu(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def machine_busy_cpu() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class CpuMeter:
    """CPU seconds of the run's processes over one measurement. Short-lived processes (a
    PostgreSQL backend that reconnects) are polled so their CPU is not lost when they exit."""

    def __init__(self, *, worker_pid: int, sandbox_pid: int) -> None:
        self.worker_pid = worker_pid
        self.sandbox_pid = sandbox_pid
        self.redis_pids = [pid for pid in _all_pids() if "redis-server" in _cmdline(pid)]
        self._seen: dict[tuple[str, int], float] = {}
        self._start: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._poll, name="cpu-meter", daemon=True)

    def _processes(self) -> list[tuple[str, int]]:
        found = [
            ("worker: consumer (main) process", self.worker_pid),
            ("sandbox provider", self.sandbox_pid),
            ("this script (submits, polls)", os.getpid()),
        ]
        found += [("redis-server (shared)", pid) for pid in self.redis_pids]
        for pid in _all_pids():
            fields = _stat_fields(pid)
            if fields and int(fields[1]) == self.worker_pid:
                found.append(("worker: pool children", pid))
            elif fields and f" {BENCH_DATABASE} " in _cmdline(pid):
                found.append(("PostgreSQL backends seen by a 0.5 s poll", pid))
        return found

    def _sample(self) -> None:
        for key in self._processes():
            value = process_cpu(key[1])
            with self._lock:
                self._seen[key] = max(value, self._seen.get(key, 0.0))

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._start = dict(self._seen)
        self._machine = machine_busy_cpu()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        self.wall = time.monotonic() - self._started
        self.seconds: Counter = Counter()
        for key, value in self._seen.items():
            self.seconds[key[0]] += value - self._start.get(key, 0.0)
        self.machine = machine_busy_cpu() - self._machine


# --- one measurement ---------------------------------------------------------------------------


@dataclass
class Measurement:
    kind: str  # "baseline" or "product"
    label: str
    round: str = ""
    orders: int = 0
    submit_seconds: float = 0.0
    makespan: float = 0.0  # first accepted -> last notify done
    burst_latencies: list[float] = field(default_factory=list)  # accepted -> terminal, s
    idle_latencies: list[float] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    cpu: Counter = field(default_factory=Counter)
    machine_cpu: float = 0.0
    database: Counter = field(default_factory=Counter)  # pg_stat_database over the burst
    profile: dict = field(default_factory=dict)  # category -> seconds of pool-child wall time
    functions: dict = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)  # "task | category" -> seconds

    @property
    def throughput(self) -> float:
        return self.orders / self.makespan if self.makespan else 0.0


def combine(measurements: list[Measurement]) -> Measurement:
    """One flow's rounds as one measurement: sums, and every order's latency."""
    first = measurements[0]
    total = Measurement(kind=first.kind, label=first.label, round="all rounds")
    for m in measurements:
        total.orders += m.orders
        total.submit_seconds += m.submit_seconds
        total.makespan += m.makespan
        total.burst_latencies += m.burst_latencies
        total.idle_latencies += m.idle_latencies
        total.outcomes += m.outcomes
        total.cpu += m.cpu
        total.machine_cpu += m.machine_cpu
        total.database += m.database
        for mine, theirs in (
            (total.profile, m.profile),
            (total.functions, m.functions),
            (total.tasks, m.tasks),
        ):
            for name, seconds in theirs.items():
                mine[name] = mine.get(name, 0.0) + seconds
    return total


class Baseline:
    """Bare canvases of the pipeline's shape; a run id per canvas, returned by every task."""

    kind = "baseline"
    label = "(a) bare canvas, no-op tasks"

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:8]
        self.accepted: dict[str, float] = {}

    def submit(self, number: int) -> str:
        from bench.bench_tasks import (
            noop_authorize,
            noop_check_line,
            noop_confirm,
            noop_notify,
            noop_verify,
        )

        run_id = f"{self.prefix}-{number}"
        self.accepted[run_id] = time.time()
        chain(
            noop_authorize.si(run_id),
            chord([noop_check_line.si(run_id, line) for line in (1, 2)], noop_verify.si(run_id)),
            noop_confirm.si(run_id),
            noop_notify.si(run_id),
        ).apply_async()
        return run_id

    def _done(self, task_name: str, run_ids: list[str]) -> dict[str, datetime]:
        from django_celery_results.models import TaskResult

        wanted = {json.dumps(run_id): run_id for run_id in run_ids}
        return {
            wanted[result]: date_done
            for result, date_done in TaskResult.objects.filter(
                task_name=task_name, status="SUCCESS", result__in=list(wanted)
            ).values_list("result", "date_done")
        }

    def notified(self, run_ids: list[str]) -> dict[str, datetime]:
        return self._done("bench.noop_notify", run_ids)

    def terminal(self, run_ids: list[str]) -> dict[str, datetime]:
        return self._done("bench.noop_confirm", run_ids)

    def accepted_at(self, run_ids: list[str]) -> dict[str, float]:
        return {run_id: self.accepted[run_id] for run_id in run_ids}

    def outcomes(self, run_ids: list[str]) -> Counter:
        return Counter({"done": len(self.terminal(run_ids))})


class Product:
    """Real orders through order_create (outbox) and the real pipeline."""

    kind = "product"
    label = "(b) real orders, real pipeline"

    def __init__(self, user) -> None:
        self.user = user

    def submit(self, number: int) -> str:
        from orders.services import order_create

        order, _ = order_create(user=self.user, lines=LINES, payment_token="tok_ok")
        return str(order.pk)

    def notified(self, order_ids: list[str]) -> dict[str, datetime]:
        from django_celery_results.models import TaskResult

        wanted = set(order_ids)
        done = {}
        for kwargs, date_done in TaskResult.objects.filter(
            task_name="notifications.notify", status="SUCCESS"
        ).values_list("task_kwargs", "date_done"):
            match = _UUID_RE.search(kwargs or "")
            if match and match[0] in wanted:
                done[match[0]] = date_done
        return done

    def terminal(self, order_ids: list[str]) -> dict[str, datetime]:
        from django_celery_results.models import TaskResult

        wanted = set(order_ids)
        done = {}
        # The order id is a keyword argument (orders/pipeline.py); older canvases passed it as
        # the first positional one.
        for args, kwargs, date_done in TaskResult.objects.filter(
            task_name="orders.confirm_order", status="SUCCESS"
        ).values_list("task_args", "task_kwargs", "date_done"):
            match = _UUID_RE.search(f"{kwargs or ''} {args or ''}")
            if match and match[0] in wanted:
                done[match[0]] = date_done
        return done

    def accepted_at(self, order_ids: list[str]) -> dict[str, float]:
        from orders.models import Order

        return {
            str(pk): created_at.timestamp()
            for pk, created_at in Order.objects.filter(pk__in=order_ids).values_list(
                "pk", "created_at"
            )
        }

    def outcomes(self, order_ids: list[str]) -> Counter:
        from orders.models import Order

        return Counter(Order.objects.filter(pk__in=order_ids).values_list("status", flat=True))


def measure(
    flow,
    *,
    orders: int,
    sequential: int,
    concurrency: int,
    env: dict[str, str],
    workdir: Path,
    redis_client,
    sandbox,
    timeout: float,
    profile: bool,
    round_label: str,
) -> Measurement:
    result = Measurement(kind=flow.kind, label=flow.label, round=round_label)
    redis_client.flushdb()
    profile_dir = workdir / f"profile-{flow.kind}"
    worker_env = dict(env)
    if profile:
        profile_dir.mkdir(exist_ok=True)
        worker_env["BENCH_PROFILE_DIR"] = str(profile_dir)
    from project.celery import app

    worker = Worker(
        env=worker_env,
        log_path=workdir / f"worker-{flow.kind}.log",
        concurrency=concurrency,
        name=f"benchpipeline-{uuid.uuid4().hex[:6]}",
        include=["bench.bench_tasks"],
        loglevel=env.get("LOG_LEVEL", "INFO"),
    )
    try:
        worker.wait_ready(app=app)
        print(f"[{flow.kind}] worker ready; warm-up and {sequential} orders one at a time")
        for number in range(WARMUP_ORDERS + sequential):
            run_id = flow.submit(number)
            # Celery sends a task's successor before it stores the task's own result: wait for
            # both ends of the chain.
            if not wait_until(
                lambda run_id=run_id: bool(flow.notified([run_id]) and flow.terminal([run_id])),
                60,
                POLL_INTERVAL,
            ):
                raise RuntimeError(f"[{flow.kind}] order {run_id} not done within 60 s")
            if number >= WARMUP_ORDERS:
                terminal = flow.terminal([run_id])[run_id].timestamp()
                result.idle_latencies.append(terminal - flow.accepted_at([run_id])[run_id])
        print(f"[{flow.kind}] burst of {orders} orders", flush=True)
        # Queue the whole burst with the consumers paused: the submissions (the API's cost,
        # measured by bench/api.py) do not compete with the pipeline for the CPUs.
        worker.consume(app, False)
        started = time.monotonic()
        run_ids = [flow.submit(WARMUP_ORDERS + sequential + n) for n in range(orders)]
        result.submit_seconds = time.monotonic() - started
        time.sleep(1.1)
        flush_database_stats()
        before = read_profiles(profile_dir) if profile else {}
        database_before = database_stats()
        with CpuMeter(worker_pid=worker.pid, sandbox_pid=sandbox.pid) as cpu:
            released = time.time()
            worker.consume(app, True)
            finished = wait_until(
                lambda: len(flow.notified(run_ids)) >= orders, timeout, BURST_POLL_INTERVAL
            )
        if not finished:
            print(f"[{flow.kind}] timeout: {len(flow.notified(run_ids))}/{orders} after {timeout}s")
        result.cpu, result.machine_cpu = cpu.seconds, cpu.machine
        if profile:
            time.sleep(1.5)  # the samplers write their totals every second
            result.profile, result.functions, result.tasks = profile_delta(
                before, read_profiles(profile_dir)
            )
    finally:
        # The main process only: the pool children finish and exit on their own (so a
        # profiling child writes its totals).
        worker.stop(60.0, main_only=True)
    time.sleep(1.0)  # backends report their statistics when they exit or go idle
    result.database = database_stats() - database_before
    accepted = flow.accepted_at(run_ids)
    terminal = flow.terminal(run_ids)
    notified = flow.notified(run_ids)
    result.orders = len(notified)
    result.outcomes = flow.outcomes(run_ids)
    if finished:
        result.makespan = max(d.timestamp() for d in notified.values()) - released
    result.burst_latencies = [
        terminal[run_id].timestamp() - max(accepted[run_id], released)
        for run_id in run_ids
        if run_id in terminal
    ]
    return result


DATABASE_COUNTERS = {
    "transactions committed": "xact_commit",
    "rows inserted": "tup_inserted",
    "rows updated": "tup_updated",
    "rows deleted": "tup_deleted",
    "connections opened": "sessions",
}


def flush_database_stats() -> None:
    """A transaction on this script's connection, more than a second after its last: PostgreSQL
    reports the backend's pending statistics, so the submissions are not counted later."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def database_stats() -> Counter:
    """PostgreSQL's own counters for the benchmark's database."""
    columns = ", ".join(DATABASE_COUNTERS.values())
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        row = admin.execute(
            f"SELECT {columns} FROM pg_stat_database WHERE datname = %s",  # noqa: S608
            (BENCH_DATABASE,),
        ).fetchone()
    return Counter(dict(zip(DATABASE_COUNTERS, row, strict=True)))


def read_profiles(directory: Path) -> dict[str, dict]:
    """The samplers' running totals, per pool child."""
    totals = {}
    for path in directory.glob("child-*.json"):
        with contextlib.suppress(OSError, ValueError):  # a file being replaced: next time
            totals[path.name] = json.loads(path.read_text())
    return totals


def profile_delta(before: dict[str, dict], after: dict[str, dict]) -> tuple[dict, dict, dict]:
    """What the children's samplers recorded between two readings (the burst, give or take the
    second between two writes)."""
    sums: tuple[Counter, Counter, Counter] = (Counter(), Counter(), Counter())
    for child, data in after.items():
        for index, part in enumerate(("seconds", "functions", "tasks")):
            earlier = before.get(child, {}).get(part, {})
            for name, seconds in data[part].items():
                sums[index][name] += seconds - earlier.get(name, 0.0)
    return dict(sums[0]), dict(sums[1]), dict(sums[2])


# --- report ------------------------------------------------------------------------------------


def print_report(rounds: list[Measurement], header: str, profile: bool) -> bool:
    kinds = [kind for kind in ("baseline", "product") if any(r.kind == kind for r in rounds)]
    results = [combine([r for r in rounds if r.kind == kind]) for kind in kinds]
    print()
    print(header)
    print()
    print(
        "| flow | orders | queued in s | makespan s | orders/s | burst p50 s | burst p99 s "
        "| 1-at-a-time p50 ms | p99 ms | outcomes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in [*rounds, *results] if len(rounds) > len(results) else results:
        print(
            f"| {r.label}, {r.round} | {r.orders} | {r.submit_seconds:.1f} | {r.makespan:.1f} | "
            f"{r.throughput:.1f} | {percentile(r.burst_latencies, 0.5):.1f} | "
            f"{percentile(r.burst_latencies, 0.99):.1f} | "
            f"{percentile(r.idle_latencies, 0.5) * 1000:.0f} | "
            f"{percentile(r.idle_latencies, 0.99) * 1000:.0f} | {dict(r.outcomes)} |"
        )
    print()
    names = sorted({name for r in results for name in r.cpu}, key=lambda n: -results[-1].cpu[n])
    print("CPU ms per order during the burst (from /proc):")
    print()
    print("| process | " + " | ".join(r.label for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    rest = "rest: short-lived PostgreSQL backends (a connection per task), other processes"
    for name in [*names, rest, "whole machine (busy, all processes)"]:
        cells = []
        for r in results:
            if name.startswith("whole machine"):
                seconds = r.machine_cpu
            elif name == rest:
                seconds = r.machine_cpu - sum(r.cpu.values())
            else:
                seconds = r.cpu[name]
            cells.append(f"{seconds / max(r.orders, 1) * 1000:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("PostgreSQL per order during the burst (pg_stat_database; with this script's polls):")
    print()
    print("| counter | " + " | ".join(r.label for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in DATABASE_COUNTERS:
        cells = [f"{r.database[name] / max(r.orders, 1):.1f}" for r in results]
        print(f"| {name} | " + " | ".join(cells) + " |")
    baseline, product = (r.throughput for r in results)
    ratio = product / baseline if baseline else 0.0
    held = (
        ratio >= TARGET_RATIO
        and all(r.orders and r.makespan for r in rounds)
        and all(set(r.outcomes) <= {"confirmed", "done"} for r in rounds)
    )
    print()
    print(
        f"b/a throughput (all rounds) = {product:.2f} / {baseline:.2f} = {ratio:.3f} "
        f"(target >= {TARGET_RATIO}: {'ok' if held else 'MISSED'})"
        + ("  [under the sampling profiler: see the plain run for throughput]" if profile else "")
    )
    if profile:
        print_profile(results)
    return held


def print_profile(results: list[Measurement]) -> None:
    print()
    print("Where the pool children's wall time goes during the burst, ms per order (sampling")
    print("profiler; idle = a child waiting for its next task):")
    print()
    names = sorted(
        {name for r in results for name in r.profile}, key=lambda n: -results[-1].profile.get(n, 0)
    )
    print("| category | " + " | ".join(r.label for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in names:
        cells = [f"{r.profile.get(name, 0.0) / max(r.orders, 1) * 1000:.2f}" for r in results]
        print(f"| {name} | " + " | ".join(cells) + " |")
    busy = [sum(v for k, v in r.profile.items() if not k.startswith("idle")) for r in results]
    print(
        "| **busy in tasks (sum)** | "
        + " | ".join(
            f"**{seconds / max(r.orders, 1) * 1000:.2f}**"
            for seconds, r in zip(busy, results, strict=True)
        )
        + " |"
    )
    for r in results:
        print_per_task(r)
    for r in results:
        total_orders = max(r.orders, 1)
        print()
        print(f"Top functions (innermost frame) of {r.label}, ms per order:")
        top = sorted(r.functions.items(), key=lambda item: -item[1])[:10]
        for name, seconds in top:
            print(f"  {seconds / total_orders * 1000:7.2f}  {name}")


SHORT_CATEGORIES = {
    "result backend: task state writes": "state writes",
    "result backend: chord counter": "chord counter",
    "task body: services and their queries": "body",
    "publish next messages (canvas -> broker)": "publish",
    "timeline: event_record (+ its log line, pub/sub)": "timeline",
    "provider HTTP (requests + sandbox round trip)": "provider",
}


def print_per_task(result: Measurement) -> None:
    """Busy ms per order, per task, split into the main categories."""
    per_task: dict[str, Counter] = {}
    for key, seconds in result.tasks.items():
        task_name, category = key.split(" | ", 1)
        column = SHORT_CATEGORIES.get(category, "other")
        per_task.setdefault(task_name, Counter())[column] += seconds
    columns = [*SHORT_CATEGORIES.values(), "other"]
    orders = max(result.orders, 1)
    print()
    print(f"Per task, {result.label}, busy ms per order:")
    print()
    print("| task | busy | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for task_name, counts in sorted(per_task.items(), key=lambda item: -item[1].total()):
        cells = [f"{counts[column] / orders * 1000:.1f}" for column in columns]
        print(f"| {task_name} | {counts.total() / orders * 1000:.1f} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=500, help="burst orders per flow, in all")
    parser.add_argument("--sequential", type=int, default=20, help="one-at-a-time, in all")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool size")
    parser.add_argument(
        "--rounds", type=int, default=2, help="a, b, a, b ...: the orders split into rounds"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--log-level", default="INFO", help="the worker's LOG_LEVEL")
    parser.add_argument("--profile", action="store_true", help="sample the pool children")
    parser.add_argument("--timeout", type=float, default=600.0, help="per burst, seconds")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="what-if: override a product setting for every process (bench/bench_settings.py)",
    )
    args = parser.parse_args(argv)
    try:
        overrides = {
            name: json.loads(value) for name, value in (item.split("=", 1) for item in args.setting)
        }
    except ValueError:
        parser.error("--setting NAME=JSON, e.g. --setting CELERY_DB_REUSE_MAX=1000")
    if not (1 <= args.orders <= 5000 and 0 <= args.sequential <= 500):
        parser.error("--orders 1-5000, --sequential 0-500")
    if not (1 <= args.concurrency <= 32 and 1 <= args.rounds <= 5):
        parser.error("--concurrency 1-32, --rounds 1-5")
    if args.orders < args.rounds:
        parser.error("--orders: at least one per round")
    workdir = Path(tempfile.mkdtemp(prefix="orderflow-bench-pipeline-"))
    load_average = os.getloadavg()[0]
    results: list[Measurement] = []
    env = environment(
        # The product's settings (+ --setting overrides, none by default).
        settings="bench.bench_settings",
        redis_url=args.redis_url,
        BENCH_SETTINGS_OVERRIDES=json.dumps(overrides),
        # The rate limit out of the way: Celery's per-task rate_limit (read from this variable)
        # far above anything reachable, the cluster-wide limiter off.
        PAYMENT_PROVIDER_RATE_LIMIT="100000/s",
        PAYMENT_PROVIDER_CLUSTER_RATE_LIMIT="0",
        LOG_LEVEL=args.log_level,
        **production_mode("pipeline"),
    )
    with (
        sandbox_process(rate_limit=0, latency=0.0) as sandbox,  # 0: no limit
        django_database(BENCH_DATABASE, {**env, "PAYMENT_PROVIDER_URL": sandbox.url}) as env,
    ):
        user = seed()
        redis_client = redis.Redis.from_url(args.redis_url)
        print(
            f"database {env['DATABASE_URL']} (PostgreSQL); redis {args.redis_url}; sandbox "
            f"{sandbox.url} (no rate limit, no latency); logs {workdir}",
            flush=True,
        )
        for number in range(1, args.rounds + 1):
            for flow in (Baseline(), Product(user)):
                results.append(
                    measure(
                        flow,
                        orders=args.orders // args.rounds,
                        sequential=args.sequential // args.rounds,
                        round_label=f"round {number}",
                        concurrency=args.concurrency,
                        env=env,
                        workdir=workdir,
                        redis_client=redis_client,
                        sandbox=sandbox,
                        timeout=args.timeout,
                        profile=args.profile,
                    )
                )
        stats = sandbox.call("stats")
    header = (
        f"PostgreSQL {BENCH_DATABASE} (result backend django-db, same database), Redis broker; "
        f"1 worker, prefork concurrency {args.concurrency}, LOG_LEVEL={args.log_level}, "
        f"DEBUG=0; sandbox without rate limit or latency; {args.orders} orders per flow in "
        f"{args.rounds} bursts, interleaved; "
        f"{os.cpu_count()} CPUs, load average {load_average:.2f} at start"
        + (f"; WHAT-IF settings {overrides}" if overrides else "")
    )
    held = print_report(results, header, args.profile)
    product_orders = sum(
        r.orders + len(r.idle_latencies) + WARMUP_ORDERS for r in results if r.kind == "product"
    )
    print(
        f"sandbox: {stats['payments']} payments, {stats['captures']} captures, "
        f"{stats['rejected_429']} 429s for {product_orders} orders"
    )
    if args.keep_logs:
        print(f"worker logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
