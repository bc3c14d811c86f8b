"""The suite isolates itself: two variables say where its Redis and broker are, and a run leaves
nothing behind in the checkout (its SQLite database, -wal/-shm and static root live elsewhere)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
# Not the run's output: the venv, git, bytecode and ruff's cache (make lint runs with --no-cache).
NOT_RUN_OUTPUT = {".venv", ".git", "__pycache__", ".ruff_cache"}

_PRINT_CONNECTIONS = """
import json
import django
from django.conf import settings
django.setup()
print(json.dumps({
    "broker": settings.CELERY_BROKER_URL,
    "redis": settings.REDIS_URL,
    "cache": settings.CACHES["default"]["LOCATION"],
}))
"""


def _suite_connections(**env: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TEST_", "ORDERFLOW_TEST_"))
    }
    environment.update(DJANGO_SETTINGS_MODULE="tests.settings", **env)
    result = subprocess.run(
        [sys.executable, "-c", _PRINT_CONNECTIONS],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_suite_connects_where_its_two_variables_say_and_nowhere_else():
    # A developer's own connection variables (shell or .env) never reach the suite.
    elsewhere = "redis://elsewhere.invalid:6379/0"
    mine = "redis://127.0.0.1:6379/9"
    assert _suite_connections(
        TEST_REDIS_URL=mine, CELERY_BROKER_URL=elsewhere, REDIS_URL=elsewhere, CACHE_URL=elsewhere
    ) == {"broker": mine, "redis": mine, "cache": mine}
    amqp = "amqp://guest:guest@127.0.0.1:5672/suite"
    assert _suite_connections(TEST_REDIS_URL=mine, TEST_CELERY_BROKER_URL=amqp) == {
        "broker": amqp,
        "redis": mine,
        "cache": mine,
    }


def _checkout_files() -> set[Path]:
    found = set()
    for directory, subdirectories, files in os.walk(BASE_DIR):
        subdirectories[:] = [name for name in subdirectories if name not in NOT_RUN_OUTPUT]
        found.update(Path(directory, name).relative_to(BASE_DIR) for name in files)
        found.update(Path(directory, name).relative_to(BASE_DIR) for name in subdirectories)
    return found


@pytest.mark.pipeline
def test_a_run_with_a_worker_and_the_database_leaves_nothing_in_the_checkout(tmp_path):
    before = _checkout_files()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("ORDERFLOW_TEST_")
    }
    environment["TMPDIR"] = str(tmp_path)  # where the run's own directory goes
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/orders/test_batches.py::test_wait_returns_200_with_the_terminal_order",
        ],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
    assert _checkout_files() - before == set()
    assert list(tmp_path.iterdir()) == []  # and the run removed its own directory
