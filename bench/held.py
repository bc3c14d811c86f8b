"""Issue 11 benchmark: 1,000 held clients on the async edge while the API serves its usual load.

    .venv/bin/python bench/held.py [--held 1000] [--duration 12] [--redis-url URL]

One run on the Procfile's web server (project/asgi.py in 2 uvicorn workers under gunicorn,
DEBUG=0, PostgreSQL through the pool), with its own PostgreSQL database and Redis database:

  1. baseline  wrk loads POST /api/orders/ (8 connections, a unique Idempotency-Key each) and
               GET /api/products/ (4 connections) at the same time for --duration s; nobody held.
  2. held      --held clients are opened and held: half GET /api/orders/<id>/stream/ (support
               staff watching 10 orders placed first), half POST /api/orders/?wait=30 (each a
               new order, queued behind every order before it: none can finish in 30 s). Once
               the server holds them all (their slots in Redis say so), the same load again.
  3. drain     a Celery worker and the sandbox provider (its real 2 req/s) start: the watched
               orders reach a terminal status at the provider's pace and every stream must get
               its final event; every wait must end 200 or 202. No 5xx anywhere.

The worker starts only after the measurements, so both load phases see the same server with the
same queue (no pipeline work competing for the 2 cores) and the held orders stay unfinished for
the whole window. Memory per held client: the web workers' RSS with everyone held minus their RSS
before, divided by the number held. Clients are asyncio connections in this process (HTTP/1.1
written by hand: a thread per client would cost this process more than the server).
Targets: order throughput held/baseline >= 0.9, GET /api/products/ p99 < 100 ms while held,
every held client ends well, no 5xx. Local only (127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:  # `python bench/held.py` puts bench/, not the project
    sys.path.insert(0, str(BASE_DIR))

from bench.api import (  # noqa: E402
    BODY,
    BROKER_QUEUES,
    WRK_REPORT,
    WRK_SCRIPT,
    Endpoint,
    run_wrk,
    wrk,
)
from bench.support import (  # noqa: E402
    BENCH_PRODUCTS,
    api_token,
    django_database,
    environment,
    production_mode,
    sandbox_process,
    seed,
)
from project.processes import (  # noqa: E402
    ASGI_APP,
    ASGI_WORKER_CLASS,
    LOCALHOST,
    Worker,
    free_port,
    web,
)

BENCH_DATABASE = "orderflow_bench_held"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
WATCHED_ORDERS = 10
PER_USER = 8  # LIVE_MAX_HELD_PER_USER's default: every held user holds exactly its cap
WAIT_SECONDS = 30
TARGET_RATIO = 0.9
TARGET_P99_MS = 100.0
ORDERS = Endpoint("product", "POST /api/orders/", "/api/orders/", 202)

GET_SCRIPT = (
    WRK_REPORT
    + r"""
function setup(thread) table.insert(threads, thread) end
function init(args) wrk.headers["Authorization"] = "Token " .. args[1] end
"""
)


@dataclass
class Load:
    orders_rps: float
    orders_p99_ms: float
    orders_statuses: Counter
    products_rps: float
    products_p50_ms: float
    products_p99_ms: float
    products_statuses: Counter
    socket_errors: int


def load(*, workdir: Path, port: int, seconds: float, token: str, slices: int = 1) -> Load:
    """POST /api/orders/ and GET /api/products/ at the same time, each with its own wrk, in
    `slices` consecutive runs with new connections each: which web process accepts which wrk
    connection is the kernel's draw, and one draw can leave one process most of the POSTs.
    Rates are over all slices; a p99 is the worst slice's."""
    if slices > 1:
        parts = [
            load(workdir=workdir, port=port, seconds=seconds / slices, token=token)
            for _ in range(slices)
        ]
        orders = sum(p.orders_rps for p in parts) / slices
        products = sum(p.products_rps for p in parts) / slices
        return Load(
            orders_rps=orders,
            orders_p99_ms=max(p.orders_p99_ms for p in parts),
            orders_statuses=sum((p.orders_statuses for p in parts), Counter()),
            products_rps=products,
            products_p50_ms=statistics.median(p.products_p50_ms for p in parts),
            products_p99_ms=max(p.products_p99_ms for p in parts),
            products_statuses=sum((p.products_statuses for p in parts), Counter()),
            socket_errors=sum(p.socket_errors for p in parts),
        )
    post_script = workdir / "orders.lua"
    post_script.write_text(WRK_SCRIPT)
    get_script = workdir / "products.lua"
    get_script.write_text(GET_SCRIPT)
    results: dict[str, object] = {}

    def products() -> None:
        results["products"] = wrk(
            script=get_script,
            url=f"http://{LOCALHOST}:{port}/api/products/",
            seconds=seconds,
            connections=4,
            args=[token],
            threads=1,
        )

    getter = threading.Thread(target=products)
    getter.start()
    requests, elapsed, _p50, p99, statuses, errors = run_wrk(
        script=post_script, port=port, endpoint=ORDERS, seconds=seconds, connections=8, token=token
    )
    getter.join()
    data = results["products"]
    return Load(
        orders_rps=requests / elapsed,
        orders_p99_ms=p99,
        orders_statuses=statuses,
        products_rps=data["requests"] / (data["duration_us"] / 1e6),
        products_p50_ms=data["p50_us"] / 1000,
        products_p99_ms=data["p99_us"] / 1000,
        products_statuses=data["statuses"],
        socket_errors=errors + data["socket_errors"],
    )


# --- held clients: asyncio connections, HTTP/1.1 by hand ---------------------------------------


@dataclass
class Held:
    kind: str  # "stream" or "wait"
    status: int = 0
    outcome: str = ""  # stream: "final"; wait: its X-Wait-Outcome
    events: int = 0
    error: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)


async def _request(port: int, method: str, path: str, token: str, body: bytes = b""):
    reader, writer = await asyncio.open_connection(LOCALHOST, port, limit=2**20)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {LOCALHOST}\r\nAuthorization: Token {token}\r\n"
        f"Accept: {'text/event-stream' if method == 'GET' else 'application/json'}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return reader, writer, status, headers


async def _chunks(reader: asyncio.StreamReader):
    while True:
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def hold_stream(held: Held, port: int, path: str, token: str, timeout: float) -> None:
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer, held.status, _headers = await _request(port, "GET", path, token)
            if held.status != 200:
                held.ready.set()
                return
            text = ""
            async for chunk in _chunks(reader):
                text += chunk.decode()
                while "\n\n" in text:
                    message, text = text.split("\n\n", 1)
                    if message.startswith(":") or message.startswith("retry:"):
                        continue
                    held.events += 1
                    if "event: status" in message:
                        held.ready.set()  # its snapshot is sent: the server now holds it
                    if "event: final" in message:
                        held.outcome = "final"
                        return
    except Exception as exc:
        held.error = repr(exc)
    finally:
        held.ready.set()
        if writer is not None:
            writer.close()


async def hold_wait(held: Held, port: int, token: str, timeout: float) -> None:
    writer = None
    try:
        async with asyncio.timeout(timeout):
            body = json.dumps(BODY).encode()
            path = f"/api/orders/?wait={WAIT_SECONDS}"
            reader, writer, held.status, headers = await _request(port, "POST", path, token, body)
            await reader.readexactly(int(headers.get("content-length", "0")))
            held.outcome = headers.get("x-wait-outcome", "")
    except Exception as exc:
        held.error = repr(exc)
    finally:
        held.ready.set()
        if writer is not None:
            writer.close()


# --- the stack -----------------------------------------------------------------------------------


def seed_held(held: int) -> dict:
    from django.contrib.auth import get_user_model

    from orders.services import order_create

    users = get_user_model().objects
    loader = seed(username="loader", products=BENCH_PRODUCTS)
    customer = seed(username="watched", products={})
    watched = [
        order_create(user=customer, lines=BODY["lines"], payment_token="tok_ok")[0].pk
        for _ in range(WATCHED_ORDERS)
    ]
    streams = held // 2
    waits = held - streams

    def tokens(prefix: str, clients: int, **extra) -> list[str]:
        keys = []
        for number in range(-(-clients // PER_USER)):
            # No password: a hash per user would take minutes; the clients use tokens.
            user = users.create_user(username=f"{prefix}{number}", password=None, **extra)
            keys += [api_token(user)] * PER_USER
        return keys[:clients]

    return {
        "loader": api_token(loader),
        "watched": watched,
        "stream_tokens": tokens("support", streams, is_staff=True),
        "wait_tokens": tokens("waiter", waits),
    }


def rss_kb(parent_pid: int) -> int:
    """Resident memory of the gunicorn master's children (the web workers), in kB."""
    total = 0
    for line in subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(parent_pid)], capture_output=True, text=True, check=False
    ).stdout.split():
        total += int(line)
    return total


def drop_queued_messages(redis_client) -> None:
    for key in list(redis_client.scan_iter(match="*", count=1000)):
        if key.decode(errors="replace").startswith(BROKER_QUEUES):
            redis_client.delete(key)


def held_slots(redis_client) -> int:
    return sum(
        redis_client.zcard(key) for key in redis_client.scan_iter(match="*:live:held:*", count=1000)
    )


async def held_phase(args, port, data, redis_client, server_pid, workdir, env, celery_app):
    streams = [Held("stream") for _ in data["stream_tokens"]]
    waits = [Held("wait") for _ in data["wait_tokens"]]
    tasks = []
    rss_before = rss_kb(server_pid)
    opened = time.monotonic()
    for number, (held, token) in enumerate(zip(streams, data["stream_tokens"], strict=True)):
        order_id = data["watched"][number % WATCHED_ORDERS]
        path = f"/api/orders/{order_id}/stream/"
        tasks.append(asyncio.create_task(hold_stream(held, port, path, token, args.drain)))
        if number % 50 == 49:
            await asyncio.sleep(0.05)
    for number, (held, token) in enumerate(zip(waits, data["wait_tokens"], strict=True)):
        tasks.append(asyncio.create_task(hold_wait(held, port, token, WAIT_SECONDS + 60)))
        if number % 50 == 49:
            await asyncio.sleep(0.05)
    for held in streams:
        await held.ready.wait()
    deadline = time.monotonic() + 60
    while (slots := held_slots(redis_client)) < args.held and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    ramp = time.monotonic() - opened
    rss_held = rss_kb(server_pid)
    print(f"held: {slots} slots in Redis after {ramp:.1f} s; measuring", flush=True)
    measured = await asyncio.to_thread(
        load,
        workdir=workdir,
        port=port,
        seconds=args.duration,
        token=data["loader"],
        slices=args.slices,
    )
    slots_after = held_slots(redis_client)
    print(f"held at the end of the window: {slots_after}", flush=True)
    # Drain: the pipeline starts on the watched orders (the load's orders are dropped from the
    # broker, or the watched orders' later steps would queue behind thousands of them); every
    # stream must see its order's final event.
    drop_queued_messages(redis_client)
    for order_id in data["watched"]:
        celery_app.send_task("orders.start_pipeline", args=[str(order_id)])
    worker = Worker(env=env, log_path=workdir / "worker.log", loglevel="WARNING")
    drained_from = time.monotonic()
    try:
        await asyncio.gather(*tasks)
    finally:
        worker.stop()
    return {
        "streams": streams,
        "waits": waits,
        "load": measured,
        "slots": slots,
        "slots_after": slots_after,
        "ramp": ramp,
        "rss_before": rss_before,
        "rss_held": rss_held,
        "drain": time.monotonic() - drained_from,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per load phase")
    parser.add_argument("--drain", type=float, default=240.0, help="longest a stream may take")
    parser.add_argument(
        "--slices", type=int, default=4, help="wrk runs per phase, each with new connections"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    if not (2 <= args.held <= 2000 and 3 <= args.duration <= 25 and 1 <= args.slices <= 10):
        parser.error("--held 2-2000, --duration 3-25 (the waits last 30 s)")
    if not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="orderflow-bench-held-"))
    load_average = os.getloadavg()[0]
    env = environment(
        settings="project.settings",
        redis_url=args.redis_url,
        ORDER_CREATE_THROTTLE_RATE="1000000/s",
        LOG_LEVEL="WARNING",
        LIVE_MAX_HELD_PER_USER=str(PER_USER),
        **production_mode("held"),
    )
    port = free_port()
    with (
        sandbox_process(rate_limit=2) as sandbox,  # the provider's real 2 req/s
        django_database(BENCH_DATABASE, {**env, "PAYMENT_PROVIDER_URL": sandbox.url}) as env,
    ):
        from project.celery import app as celery_app

        redis_client = redis.Redis.from_url(args.redis_url)
        data = seed_held(args.held)
        server = web(
            env=env,
            log_path=workdir / "gunicorn.log",
            port=port,
            app=ASGI_APP,
            workers=2,
            worker_class=ASGI_WORKER_CLASS,
        )
        with server as process:
            print(f"server up; load average {load_average:.2f}; baseline ...", flush=True)
            load(workdir=workdir, port=port, seconds=3, token=data["loader"])  # warm-up
            baseline = load(
                workdir=workdir,
                port=port,
                seconds=args.duration,
                token=data["loader"],
                slices=args.slices,
            )
            print(f"baseline: {baseline}", flush=True)
            result = asyncio.run(
                held_phase(args, port, data, redis_client, process.pid, workdir, env, celery_app)
            )
            server_5xx = sum(
                1
                for line in (workdir / "gunicorn.log").read_text(errors="replace").splitlines()
                if '" 5' in line
            )
    return report(args, baseline, result, server_5xx, load_average)


def report(args, baseline: Load, result: dict, server_5xx: int, load_average: float) -> int:
    held_load: Load = result["load"]
    streams, waits = result["streams"], result["waits"]
    stream_outcomes = Counter(
        held.outcome or f"{held.status} {held.error[:60]}".strip() for held in streams
    )
    wait_outcomes = Counter(f"{held.status} {held.outcome or held.error[:60]}" for held in waits)
    held_count = len(streams) + len(waits)
    per_client_kb = (result["rss_held"] - result["rss_before"]) / held_count
    ratio = held_load.orders_rps / baseline.orders_rps
    print()
    print(
        f"The Procfile's web server (gunicorn + 2 uvicorn workers, DEBUG=0, PostgreSQL pool); "
        f"{held_count} held clients ({len(streams)} streams on {WATCHED_ORDERS} orders, "
        f"{len(waits)} ?wait={WAIT_SECONDS}); wrk: POST 8 connections + GET products 4, "
        f"{args.duration:g} s per phase; {os.cpu_count()} CPUs, load average "
        f"{load_average:.2f} at start"
    )
    print()
    print(
        "| phase | POST /api/orders/ req/s | POST p99 ms | GET /api/products/ req/s "
        "| GET p50 ms | GET p99 ms | statuses |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, phase in (("baseline (nobody held)", baseline), (f"{held_count} held", held_load)):
        statuses = dict(phase.orders_statuses + phase.products_statuses)
        print(
            f"| {name} | {phase.orders_rps:.0f} | {phase.orders_p99_ms:.1f} | "
            f"{phase.products_rps:.0f} | {phase.products_p50_ms:.1f} | "
            f"{phase.products_p99_ms:.1f} | {statuses}, socket errors {phase.socket_errors} |"
        )
    print()
    print(
        f"held in Redis when the window opened / closed: {result['slots']} / "
        f"{result['slots_after']} (ramp {result['ramp']:.1f} s); drain {result['drain']:.0f} s"
    )
    print(f"streams: {dict(stream_outcomes)}; waits: {dict(wait_outcomes)}")
    print(
        f"web workers' RSS: {result['rss_before'] / 1024:.0f} MiB before, "
        f"{result['rss_held'] / 1024:.0f} MiB held: {per_client_kb:.1f} kB per held client"
    )
    every_stream = stream_outcomes == Counter({"final": len(streams)})
    every_wait = all(held.status in (200, 202) and not held.error for held in waits)
    no_5xx = server_5xx == 0 and not any(
        status >= 500
        for phase in (baseline, held_load)
        for status in phase.orders_statuses + phase.products_statuses
    )
    targets = [
        (f"orders held/baseline {ratio:.3f} >= {TARGET_RATIO}", ratio >= TARGET_RATIO),
        (
            f"GET /api/products/ p99 {held_load.products_p99_ms:.1f} ms < {TARGET_P99_MS:.0f}",
            held_load.products_p99_ms < TARGET_P99_MS,
        ),
        ("every stream got its final event", every_stream),
        ("every wait ended 200/202", every_wait),
        (f"no 5xx (server log: {server_5xx})", no_5xx),
    ]
    print("targets: " + "; ".join(f"{text} {'ok' if held else 'MISSED'}" for text, held in targets))
    return 0 if all(held for _, held in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
