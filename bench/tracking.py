"""Issue 5 measurement: should the tracking page stream server-sent events or poll the JSON API?

    .venv/bin/python bench/tracking.py [--seconds 10] [--hold 30]

One run against the WSGI server the Procfile had when issue 5 was decided (gunicorn on
project/wsgi.py, 2 workers x 4 threads, DEBUG=0), with an order that stays `accepted` (no worker
runs):

  1. polling   8 keep-alive clients GET /api/orders/<id>/ (what the page fetches) back to back:
               requests/s, p50, p99. The page polls every 0.5 s, backing off to 5 s, so a viewer
               costs at most 2 requests/s and usually far less.
  2. held      N requests that hold a server thread open the way an SSE stream does (POST
               /api/orders/?wait=H: a sync thread blocked on Redis pub/sub for H seconds), for N
               = 4 (half the threads) and 8 (all of them); meanwhile 3 GET /api/products/ are timed.

Self-contained and local only (127.0.0.1): its own PostgreSQL database and Redis database
(--redis-url).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:  # `python bench/tracking.py` puts bench/, not the project
    sys.path.insert(0, str(BASE_DIR))

from bench.support import (  # noqa: E402
    api_token,
    django_database,
    environment,
    percentile,
    production_mode,
    seed,
)
from project.processes import LOCALHOST, free_port, web  # noqa: E402

BENCH_DATABASE = "orderflow_bench_tracking"
REDIS_URL = "redis://127.0.0.1:6379/10"
WORKERS, THREADS = 2, 4  # the Procfile's web server
BODY = json.dumps({"lines": [{"sku": "BENCH-A", "quantity": 1}], "payment_token": "tok_ok"})


def request(port: int, method: str, path: str, token: str, body: str | None = None, timeout=60):
    connection = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    started = time.monotonic()
    connection.request(
        method,
        path,
        body=body,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, time.monotonic() - started, payload


def poll_load(port: int, path: str, token: str, clients: int, seconds: float):
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(LOCALHOST, port, timeout=30)
        headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        mine: list[float] = []
        while time.monotonic() < deadline:
            started = time.monotonic()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append(time.monotonic() - started)
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / seconds, latencies, statuses


def held_streams(port: int, token: str, streams: int, hold: float) -> list[float]:
    """Hold `streams` threads with ?wait, then time GET /api/products/ while they are held."""

    def hold_one() -> None:
        # A holder may itself queue behind the others for a while: allow for two holds.
        request(port, "POST", f"/api/orders/?wait={hold:g}", token, BODY, timeout=2 * hold + 30)

    holders = [threading.Thread(target=hold_one) for _ in range(streams)]
    for holder in holders:
        holder.start()
    time.sleep(1.0)  # let every holder reach its thread
    timings = []
    for _ in range(3):
        _status, seconds, _ = request(port, "GET", "/api/products/", token, timeout=hold + 30)
        timings.append(seconds)
    for holder in holders:
        holder.join()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="polling load duration")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds a held request lasts")
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="orderflow-bench-tracking-"))
    env = environment(
        settings="project.settings",
        redis_url=args.redis_url,
        ORDER_CREATE_THROTTLE_RATE="1000000/s",
        LOG_LEVEL="WARNING",
        **production_mode("tracking"),
    )
    port = free_port()
    with (
        django_database(BENCH_DATABASE, env) as env,
        web(
            env=env, log_path=workdir / "gunicorn.log", port=port, workers=WORKERS, threads=THREADS
        ),
    ):
        token = api_token(seed())
        status, _, payload = request(port, "POST", "/api/orders/", token, BODY)
        assert status == 202, payload
        order_path = f"/api/orders/{json.loads(payload)['id']}/"

        print(f"gunicorn {WORKERS} workers x {THREADS} threads, DEBUG=0, PostgreSQL, no worker")
        rps, latencies, statuses = poll_load(port, order_path, token, 8, args.seconds)
        print(
            f"1. polling GET {order_path}: {rps:.0f} req/s, p50 "
            f"{percentile(latencies, 0.5) * 1000:.1f} ms, p99 "
            f"{percentile(latencies, 0.99) * 1000:.1f} ms, statuses {statuses}; "
            f"viewers at the page's fastest poll (2 req/s each): {rps / 2:.0f}, "
            f"at its slowest (0.2 req/s): {rps / 0.2:.0f}"
        )
        for streams in (4, WORKERS * THREADS):
            timings = held_streams(port, token, streams, args.hold)
            print(
                f"2. {streams} held streams ({args.hold:g} s each): GET /api/products/ took "
                + ", ".join(f"{seconds:.2f} s" for seconds in timings)
            )


if __name__ == "__main__":
    main()
