"""bench/pipeline.py's worker additions, loaded with `celery -A project worker --include
bench.bench_tasks` (the product's tasks are registered as usual; nothing here runs in production).

* No-op tasks for the baseline canvas: the pipeline's shape (a task, a chord of one task per line
  and its callback, two more tasks) on the same queues, broker and result backend, with bodies
  that only return the run id (so the benchmark can read when each finished).
* With BENCH_PROFILE_DIR set, a sampling profiler in every pool child: a thread looks at the
  child's stack every BENCH_PROFILE_INTERVAL seconds, files the elapsed time under the first
  category that matches the stack (see CATEGORIES) and writes the totals to
  BENCH_PROFILE_DIR/child-<pid>.json every second and at exit. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from celery import shared_task, signals


@shared_task(name="bench.noop_authorize", queue="provider")
def noop_authorize(run_id: str) -> str:
    return run_id


@shared_task(name="bench.noop_check_line", queue="orders")
def noop_check_line(run_id: str, line: int) -> str:
    return run_id


@shared_task(name="bench.noop_verify", queue="orders")
def noop_verify(run_id: str) -> str:
    return run_id


@shared_task(name="bench.noop_confirm", queue="provider")
def noop_confirm(run_id: str) -> str:
    return run_id


@shared_task(name="bench.noop_notify", queue="notifications")
def noop_notify(run_id: str) -> str:
    return run_id


# --- the sampling profiler ---------------------------------------------------------------------

# (category, path fragment, function name or None for any): the first rule that matches any frame
# of the stack wins, so the order is the priority (e.g. a log line written by event_record is
# timeline cost; a query made to store a task's state is result-backend cost).
CATEGORIES = [
    ("provider HTTP (requests + sandbox round trip)", "orders/provider/client.py", "_request"),
    ("timeline: event_record (+ its log line, pub/sub)", "orders/services/events.py", None),
    ("outbox", "orders/services/outbox.py", None),
    ("result backend: chord counter", "django_celery_results/backends/database.py", "apply_chord"),
    (
        "result backend: chord counter",
        "django_celery_results/backends/database.py",
        "on_chord_part_return",
    ),
    ("result backend: task state writes", "celery/backends/base.py", "store_result"),
    ("result backend: task state writes", "celery/backends/base.py", "mark_as_started"),
    ("result backend: group save", "celery/backends/base.py", "save_group"),
    ("publish next messages (canvas -> broker)", "kombu/messaging.py", "publish"),
    ("publish next messages (canvas -> broker)", "celery/canvas.py", None),
    ("logging (task received/handled lines)", "logging/__init__.py", None),
    ("task body: services and their queries", "/orders/", None),
    ("task body: services and their queries", "/notifications/", None),
    ("task body: services and their queries", "bench/bench_tasks.py", "noop_"),
    ("Celery tracing, signals, serialisation", "celery/app/trace.py", None),
]
IDLE = "idle: waiting for a task (pool IPC)"
TASK_FRAME = ("celery/app/trace.py", "trace_task")


_NO_RULE = len(CATEGORIES)
_rule_by_code: dict = {}  # code object -> (index of the first matching rule, is the task frame)


def _rule_for(code) -> tuple[int, bool]:
    cached = _rule_by_code.get(code)
    if cached is None:
        index = next(
            (
                i
                for i, (_, fragment, name) in enumerate(CATEGORIES)
                if fragment in code.co_filename and (name is None or code.co_name.startswith(name))
            ),
            _NO_RULE,
        )
        is_task = code.co_filename.endswith(TASK_FRAME[0]) and code.co_name == TASK_FRAME[1]
        cached = _rule_by_code[code] = (index, is_task)
    return cached


def _classify(frame) -> tuple[str, str, str]:
    """The stack's category, its innermost function (for the top list) and the task's name."""
    innermost = frame.f_code
    best, task_frame = _NO_RULE, None
    while frame is not None:
        index, is_task = _rule_for(frame.f_code)
        best = min(best, index)
        if is_task:
            task_frame = frame
        frame = frame.f_back
    if task_frame is None:
        return IDLE, "", ""
    where = f"{Path(innermost.co_filename).name}:{innermost.co_name}"
    category = CATEGORIES[best][0] if best < _NO_RULE else "other (in a task)"
    # trace_task is a closure over the task's name (a free variable, so in its f_locals).
    task_name = str(task_frame.f_locals.get("name", "?"))
    return category, where, task_name


class _Sampler(threading.Thread):
    def __init__(self, target_thread: int, directory: Path, interval: float) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.target_thread = target_thread
        self.path = directory / f"child-{os.getpid()}.json"
        self.interval = interval
        self.seconds: Counter = Counter()
        self.functions: Counter = Counter()
        self.tasks: Counter = Counter()
        self.lock = threading.Lock()

    def run(self) -> None:
        last = last_dump = time.perf_counter()
        while True:
            time.sleep(self.interval)
            frame = sys._current_frames().get(self.target_thread)
            now = time.perf_counter()
            if frame is not None:
                category, where, task_name = _classify(frame)
                with self.lock:
                    self.seconds[category] += now - last
                    if where:
                        self.functions[f"{category} | {where}"] += now - last
                        self.tasks[f"{task_name} | {category}"] += now - last
            last = now
            if now - last_dump > 1.0:
                self.dump()
                last_dump = now

    def dump(self) -> None:
        with self.lock:
            data = {
                "seconds": dict(self.seconds),
                "functions": dict(self.functions),
                "tasks": dict(self.tasks),
            }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        temporary.replace(self.path)


_sampler: _Sampler | None = None


@signals.worker_process_init.connect
def _start_sampler(**kwargs) -> None:
    global _sampler
    directory = os.environ.get("BENCH_PROFILE_DIR")
    if not directory:
        return
    interval = float(os.environ.get("BENCH_PROFILE_INTERVAL", "0.002"))
    _sampler = _Sampler(threading.get_ident(), Path(directory), interval)
    _sampler.start()


@signals.worker_process_shutdown.connect
def _dump_sampler(**kwargs) -> None:
    if _sampler is not None:
        _sampler.dump()
