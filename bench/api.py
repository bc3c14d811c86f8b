"""Issue 6 benchmark: what does POST /api/orders/ cost next to what a typical developer writes?

    .venv/bin/python bench/api.py [--duration 15] [--rounds 2] [--connections 16]
        [--servers edge wsgi] [--edge-threads 2]

One run, one database, and one or more servers side by side (`--servers`, each with --workers
processes on a port of its own), each serving three endpoints. Loaded in turn, after a short
warm-up of each: every endpoint on every server, then the next endpoint (a on each server, b on
each, c on each, then the next round), so that the machine's noise falls on all servers alike:

  (a) naive    the endpoint a typical Django developer would write instead (bench/naive.py): a
               ModelSerializer with nested lines and catalog prices, the pipeline task's
               `.delay()` in `transaction.on_commit`; no idempotency, no outbox, no timeline;
  (b) product  POST /api/orders/: validation, throttle, Idempotency-Key (a unique key per
               request, as real clients send), order + lines + timeline event + outbox row in one
               transaction, published after commit, the order re-read for the response;
  (c) floor    a bare DRF view that inserts one row (same middleware, auth and JSON parsing).

Servers: `edge` is the Procfile's (project/asgi.py: project/edge.py in uvicorn workers under
gunicorn; `edge:N` with N sync threads); `asgi-django` is Django's ASGI handler serving every view
(the edge before its thread pool, bench/asgi_django.py); `wsgi` is issue 6's gunicorn sync
workers on project/wsgi.py; `gthread` the same with --threads. The first server named is judged
against the targets; the others are its baselines in the same run.

Self-contained and local only (127.0.0.1): it creates and drops the PostgreSQL database
`orderflow_bench_api`, migrates and seeds it, uses its own Redis database for the broker, the
cache and pub/sub (flushed before and after) with NO worker consuming, runs the servers with
DEBUG=0 and the order-create throttle raised out of the way, and loads them with `wrk` (a Lua
script sends the same 2-line body to all three and a unique Idempotency-Key per request) or,
without wrk, a Python keep-alive client (a weaker load generator: it needs CPU of its own).
Targets: b/a >= 0.90 and p99 of (b) < 100 ms. It checks that every answer was the expected
2xx and that the rows and broker messages exist.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:  # `python bench/api.py` puts bench/, not the project
    sys.path.insert(0, str(BASE_DIR))

from bench.support import (  # noqa: E402
    api_token,
    django_database,
    environment,
    production_mode,
    seed,
)
from project.processes import (  # noqa: E402
    ASGI_APP,
    ASGI_WORKER_CLASS,
    LOCALHOST,
    QUEUES,
    free_port,
    web,
)

BENCH_DATABASE = "orderflow_bench_api"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
SETTINGS_MODULE = "bench.bench_settings"  # the product's settings + bench/bench_urls.py
BROKER_QUEUES = QUEUES
BODY = {
    "lines": [{"sku": "BENCH-A", "quantity": 1}, {"sku": "BENCH-B", "quantity": 2}],
    "payment_token": "tok_ok",
}
TARGET_RATIO = 0.90  # b/a
TARGET_P99_MS = 100.0  # of (b), at --connections
UNLOADED = "1 conn"


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    path: str
    expected_status: int


ENDPOINTS = (
    Endpoint("naive", "(a) naive DRF + .delay()", "/bench/naive/orders/", 201),
    Endpoint("product", "(b) POST /api/orders/", "/api/orders/", 202),
    Endpoint("floor", "(c) floor: 1 INSERT", "/bench/floor/", 201),
)


@dataclass
class Run:
    endpoint: Endpoint
    label: str  # "warm-up" or "round N"
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: Counter
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(self.endpoint.expected_status, 0)

    @property
    def unexpected(self) -> dict[int, int]:
        return {s: n for s, n in self.statuses.items() if s != self.endpoint.expected_status}


@dataclass
class Summary:
    endpoint: Endpoint
    runs: list[Run] = field(default_factory=list)

    @property
    def rps(self) -> float:  # over all measured rounds
        return sum(r.requests for r in self.runs) / sum(r.seconds for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:  # the worst round: the target must hold in every one
        return max(r.p99_ms for r in self.runs)


# --- load generators ---------------------------------------------------------------------------

# wrk's report, shared by every script: each thread counts its answers' statuses; `done` sums them
# and prints one JSON line. A script adds its own setup (which appends to `threads`) and init.
WRK_REPORT = r"""
threads = {}
statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"socket_errors": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.connect + errors.read + errors.write + errors.timeout, table.concat(parts, ", ")))
end
"""

# One Lua state per wrk thread: each numbers its requests, so every Idempotency-Key is unique.
WRK_SCRIPT = (
    WRK_REPORT
    + r"""
local counter = 0
local prefix = ""

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  prefix = args[1] .. "-" .. thread_number .. "-"
  wrk.method = "POST"
  wrk.body = args[2]
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Token " .. args[3]
end

function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format()
end
"""
)


def wrk(
    *, script: Path, url: str, seconds: float, connections: int, args: list[str], threads: int = 2
) -> dict:
    """One wrk run with a script built on WRK_REPORT; its BENCH_RESULT line, parsed."""
    result = subprocess.run(
        [
            "wrk",
            "--threads",
            str(min(threads, connections)),
            "--connections",
            str(connections),
            "--duration",
            f"{seconds:g}s",
            "--timeout",
            "5s",
            "--script",
            str(script),
            url,
            "--",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if result.returncode or not lines:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    data = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    data["statuses"] = Counter({int(status): count for status, count in data["statuses"].items()})
    return data


def run_wrk(
    *, script: Path, port: int, endpoint: Endpoint, seconds: float, connections: int, token: str
) -> tuple[int, float, float, float, Counter, int]:
    data = wrk(
        script=script,
        url=f"http://{LOCALHOST}:{port}{endpoint.path}",
        seconds=seconds,
        connections=connections,
        args=[uuid.uuid4().hex[:12], json.dumps(BODY), token],
    )
    return (
        data["requests"],
        data["duration_us"] / 1e6,
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
        data["statuses"],
        data["socket_errors"],
    )


def run_python_client(
    *, port: int, endpoint: Endpoint, seconds: float, connections: int, token: str
) -> tuple[int, float, float, float, Counter, int]:
    """Threads with keep-alive http.client connections (reconnecting when the server closes)."""
    body = json.dumps(BODY).encode()
    run_id = uuid.uuid4().hex[:12]
    latencies: list[list[float]] = [[] for _ in range(connections)]
    statuses: list[Counter] = [Counter() for _ in range(connections)]
    errors = [0] * connections
    start = time.monotonic()
    deadline = start + seconds

    def client(index: int) -> None:
        connection = None
        for number in range(1, 10**9):
            if time.monotonic() >= deadline:
                break
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Token {token}",
                "Idempotency-Key": f"{run_id}-{index}-{number}",
            }
            sent = time.perf_counter()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(LOCALHOST, port, timeout=5)
                connection.request("POST", endpoint.path, body, headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                if connection is not None:
                    connection.close()
                connection = None
                continue
            latencies[index].append(time.perf_counter() - sent)
            statuses[index][response.status] += 1
            if response.will_close:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + 30)
    elapsed = time.monotonic() - start
    every = sorted(value for values in latencies for value in values) or [0.0]
    return (
        len(every),
        elapsed,
        every[len(every) // 2] * 1000,
        every[min(len(every) - 1, int(len(every) * 0.99))] * 1000,
        sum(statuses, Counter()),
        sum(errors),
    )


# --- checks and report -------------------------------------------------------------------------


def broker_messages(redis_client) -> int:
    """Messages waiting in the pipeline's queues (kombu's Redis lists, all priority steps)."""
    total = 0
    for key in redis_client.scan_iter(match="*", count=1000):
        name = key.decode(errors="replace")
        if name.startswith(BROKER_QUEUES) and redis_client.type(key) == b"list":
            total += redis_client.llen(key)
    return total


def rows_checks(runs: list[Run], connections: int, redis_client) -> list[tuple[str, bool, str]]:
    """Rows created against answers counted: every answered 2xx left its rows; at most
    `connections` requests per load run were still in flight (done, unanswered) at its end."""
    from orders.models import Order, OrderEvent, OrderLine, OutboxMessage

    ok = Counter()
    loads = Counter()
    for run in runs:
        ok[run.endpoint.key] += run.ok
        loads[run.endpoint.key] += 1
    naive_orders = Order.objects.filter(idempotency_key__isnull=True).count()
    product_orders = Order.objects.filter(idempotency_key__isnull=False).count()
    floor_rows = OutboxMessage.objects.filter(task_name="bench.floor").count()
    outbox = OutboxMessage.objects.filter(task_name="orders.start_pipeline")
    # Sent after commit (no worker runs, so none is marked received): no failed send, no relay.
    sent = outbox.filter(attempts=0, last_error="").count()
    lines = OrderLine.objects.count()
    events = OrderEvent.objects.filter(name="accepted").count()
    queued = broker_messages(redis_client)

    def within(rows: int, key: str) -> bool:
        return ok[key] <= rows <= ok[key] + connections * loads[key]

    return [
        ("(a) orders >= 201s", within(naive_orders, "naive"), f"{naive_orders} vs {ok['naive']}"),
        (
            "(b) orders >= 202s",
            within(product_orders, "product"),
            f"{product_orders} vs {ok['product']}",
        ),
        ("(c) rows >= 201s", within(floor_rows, "floor"), f"{floor_rows} vs {ok['floor']}"),
        (
            "2 lines per order",
            lines == 2 * (naive_orders + product_orders),
            f"{lines} lines",
        ),
        ("(b) timeline event per order", events == product_orders, f"{events} events"),
        (
            "(b) one outbox row per order, each sent after commit",
            outbox.count() == product_orders == sent,
            f"{sent}/{outbox.count()}",
        ),
        (
            "broker holds (a)+(b) messages",
            queued == naive_orders + sent,
            f"{queued} queued, no worker",
        ),
    ]


@dataclass(frozen=True)
class Server:
    key: str
    label: str
    app: str
    worker_class: str | None = None
    threads: int = 1
    env: tuple[tuple[str, str], ...] = ()


def edge_server(threads: int, key: str = "edge") -> Server:
    return Server(
        key,
        f"edge (Procfile: uvicorn, project/asgi.py, {threads} sync threads)",
        ASGI_APP,
        ASGI_WORKER_CLASS,
        env=(("WEB_SYNC_THREADS", str(threads)),),
    )


def servers_for(names: list[str], *, edge_threads: int, gthread_threads: int) -> list[Server]:
    """`edge:N` is the edge with N sync threads, to compare thread counts in one run."""
    known = {
        "edge": edge_server(edge_threads),
        "asgi-django": Server(
            "asgi-django",
            "Django's ASGI handler for every view (uvicorn)",
            "bench.asgi_django:application",
            ASGI_WORKER_CLASS,
        ),
        "wsgi": Server("wsgi", "gunicorn sync (issue 6)", "project.wsgi:application"),
        "gthread": Server(
            "gthread",
            f"gunicorn gthread x {gthread_threads}",
            "project.wsgi:application",
            threads=gthread_threads,
        ),
    }
    return [
        edge_server(int(name.partition(":")[2]), key=name)
        if name.startswith("edge:")
        else known[name]
        for name in names
    ]


def print_report(
    server: Server,
    summaries: dict[str, Summary],
    runs: list[Run],
    unloaded: list[Run],
) -> tuple[bool, float, float]:
    print()
    print(f"### {server.label}")
    print()
    print("| endpoint | run | requests | req/s | p50 ms | p99 ms | non-2xx / socket errors |")
    print("|---|---|---:|---:|---:|---:|---|")
    for run in runs:
        unexpected = ", ".join(f"{s}: {n}" for s, n in sorted(run.unexpected.items())) or "0"
        print(
            f"| {run.endpoint.label} | {run.label} | {run.requests} | {run.rps:.0f} | "
            f"{run.p50_ms:.1f} | {run.p99_ms:.1f} | {unexpected} / {run.socket_errors} |"
        )
    print()
    print("| endpoint | req/s (all rounds) | p50 ms (median) | p99 ms (worst round) |")
    print("|---|---:|---:|---:|")
    for summary in summaries.values():
        print(
            f"| {summary.endpoint.label} | {summary.rps:.0f} | {summary.p50_ms:.1f} | "
            f"{summary.p99_ms:.1f} |"
        )
    if unloaded:
        print()
        print("Service time, 1 connection (no queueing):")
        print()
        print("| endpoint | req/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|")
        for run in unloaded:
            print(f"| {run.endpoint.label} | {run.rps:.0f} | {run.p50_ms:.1f} | {run.p99_ms:.1f} |")
    naive, product, floor = (summaries[key] for key in ("naive", "product", "floor"))
    ratio_naive = product.rps / naive.rps
    print()
    print(
        f"b/a = {ratio_naive:.3f} (target >= {TARGET_RATIO})   b/c = {product.rps / floor.rps:.3f}"
    )
    held = ratio_naive >= TARGET_RATIO and product.p99_ms < TARGET_P99_MS
    print(
        f"targets: b/a >= {TARGET_RATIO} {'ok' if ratio_naive >= TARGET_RATIO else 'MISSED'}; "
        f"p99 of (b) {product.p99_ms:.1f} ms < {TARGET_P99_MS:.0f} ms "
        f"{'ok' if product.p99_ms < TARGET_P99_MS else 'MISSED'}"
    )
    return held, product.rps, product.p99_ms


def server_name(value: str) -> str:
    kind, _, threads = value.partition(":")
    if value in ("edge", "asgi-django", "wsgi", "gthread") or (
        kind == "edge" and threads.isdigit() and 1 <= int(threads) <= 64
    ):
        return value
    raise argparse.ArgumentTypeError("one of edge, edge:N, asgi-django, wsgi, gthread")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per endpoint")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--unloaded", type=float, default=5.0, help="seconds per endpoint at 1 connection (0: skip)"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes per server")
    parser.add_argument(
        "--servers",
        nargs="+",
        type=server_name,
        default=["edge", "wsgi"],
        help="served side by side and loaded in turn; the first is judged against the targets, "
        "the others are its baselines in the same run. edge: the Procfile's server (edge:N "
        "with N sync threads); "
        "asgi-django: Django's ASGI handler serving every view (the edge before its thread "
        "pool); wsgi: gunicorn sync workers on project/wsgi.py (issue 6); gthread: the same "
        "with --threads",
    )
    parser.add_argument("--edge-threads", type=int, default=2, help="the edge's WEB_SYNC_THREADS")
    parser.add_argument("--threads", type=int, default=4, help="gthread's threads per worker")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--log-level", default="INFO", help="the servers' LOG_LEVEL")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = parser.parse_args(argv)
    if not (1 <= args.duration <= 300 and 0 <= args.warmup <= 60 and 1 <= args.rounds <= 10):
        parser.error("--duration 1-300, --warmup 0-60, --rounds 1-10")
    if not 0 <= args.unloaded <= 60:
        parser.error("--unloaded 0-60")
    if not (1 <= args.connections <= 256 and 1 <= args.workers <= 32 and 1 <= args.threads <= 64):
        parser.error("--connections 1-256, --workers 1-32, --threads 1-64")
    if len(set(args.servers)) != len(args.servers):
        parser.error("--servers: each once")
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    elif loadgen == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk), use --loadgen python")

    servers = servers_for(
        args.servers, edge_threads=args.edge_threads, gthread_threads=args.threads
    )
    workdir = Path(tempfile.mkdtemp(prefix="orderflow-bench-api-"))
    script = workdir / "orders.lua"
    script.write_text(WRK_SCRIPT)
    load_average = os.getloadavg()[0]
    runs: dict[str, list[Run]] = {server.key: [] for server in servers}
    env = environment(
        settings=SETTINGS_MODULE,
        redis_url=args.redis_url,
        ORDER_CREATE_THROTTLE_RATE="1000000/s",  # measured, but never in the way
        LOG_LEVEL=args.log_level,
        **production_mode("api"),
    )
    with django_database(BENCH_DATABASE, env) as env, contextlib.ExitStack() as stack:
        token = api_token(seed())
        redis_client = redis.Redis.from_url(args.redis_url)
        ports = {}
        for server in servers:
            ports[server.key] = free_port()
            stack.enter_context(
                web(
                    env={**env, **dict(server.env)},
                    log_path=workdir / f"{server.key}.log",
                    port=ports[server.key],
                    app=server.app,
                    workers=args.workers,
                    threads=server.threads,
                    worker_class=server.worker_class,
                )
            )

        def load(server: Server, endpoint: Endpoint, seconds: float, label: str, connections: int):
            client = (
                functools.partial(run_wrk, script=script) if loadgen == "wrk" else run_python_client
            )
            result = client(
                port=ports[server.key],
                endpoint=endpoint,
                seconds=seconds,
                connections=connections,
                token=token,
            )
            run = Run(endpoint, label, *result)
            print(
                f"  {server.key:<11} {endpoint.label:<26} {label:<8} {run.rps:7.0f} req/s  p50 "
                f"{run.p50_ms:6.1f} ms  p99 {run.p99_ms:6.1f} ms  "
                f"statuses {dict(run.statuses)}  socket errors {run.socket_errors}",
                flush=True,
            )
            runs[server.key].append(run)

        print(
            f"database {env['DATABASE_URL']} (PostgreSQL); redis {args.redis_url}, no worker; "
            f"{len(servers)} servers x {args.workers} processes, side by side; {loadgen}, "
            f"{args.connections} connections",
            flush=True,
        )
        # Interleaved: each round loads every endpoint on every server in turn, so that the
        # machine's noise falls on all of them alike.
        if args.warmup:
            for endpoint in ENDPOINTS:
                for server in servers:
                    load(server, endpoint, args.warmup, "warm-up", args.connections)
        for number in range(1, args.rounds + 1):
            for endpoint in ENDPOINTS:
                for server in servers:
                    load(server, endpoint, args.duration, f"round {number}", args.connections)
        if args.unloaded:
            for endpoint in ENDPOINTS:
                for server in servers:
                    load(server, endpoint, args.unloaded, UNLOADED, 1)
        every_run = [run for server_runs in runs.values() for run in server_runs]
        checks = rows_checks(every_run, args.connections, redis_client)

    print()
    print(
        f"PostgreSQL {BENCH_DATABASE}, Redis broker without a worker; {args.workers} processes "
        f"per server (DEBUG=0, LOG_LEVEL={args.log_level}, access log on); {loadgen} "
        f"{args.connections} connections, {args.rounds} rounds x {args.duration:g} s per "
        f"endpoint and server, interleaved; {os.cpu_count()} CPUs, load average "
        f"{load_average:.2f} at start"
    )
    results = {}
    for server in servers:
        server_runs = runs[server.key]
        measured = [run for run in server_runs if run.label not in ("warm-up", UNLOADED)]
        unloaded = [run for run in server_runs if run.label == UNLOADED]
        summaries = {endpoint.key: Summary(endpoint) for endpoint in ENDPOINTS}
        for run in measured:
            summaries[run.endpoint.key].runs.append(run)
        results[server.key] = print_report(server, summaries, measured, unloaded)
    first = servers[0]
    held, first_rps, first_p99 = results[first.key]
    if len(servers) > 1:
        print()
        print(f"(b) POST /api/orders/ on {first.key}, against each baseline in this run:")
        print()
        print("| baseline | (b) req/s, first / baseline | p99 of (b) ms, first vs baseline |")
        print("|---|---:|---|")
        for server in servers[1:]:
            _, rps, p99 = results[server.key]
            print(f"| {server.key} | {first_rps / rps:.3f} | {first_p99:.1f} vs {p99:.1f} |")
    print()
    print(
        "checks: "
        + "; ".join(f"{name} {'ok' if ok else 'FAILED'} ({info})" for name, ok, info in checks)
    )
    if args.keep_logs:
        print(f"server logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if held and all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
