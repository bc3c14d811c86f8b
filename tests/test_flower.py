"""Flower (which can run any task) does not start in production with a known or missing password."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.processes import free_port

BASE_DIR = Path(__file__).resolve().parent.parent


def flower(port: int, **env: str) -> subprocess.Popen:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("FLOWER_") and key not in {"DJANGO_SETTINGS_MODULE", "DEBUG"}
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DEBUG="0",
        SECRET_KEY="a-real-secret-key-for-this-test-only-0123456789",
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        **env,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "project.flower", "--address=127.0.0.1", f"--port={port}"],
        cwd=BASE_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        ("admin:orderflow", "refuses the default"),
        (None, "needs FLOWER_BASIC_AUTH"),
        ("admin:", "user:password pairs"),
        ("ops:a-long-password,admin:orderflow", "refuses the default"),
    ],
)
def test_flower_refuses_to_start_in_production_without_a_password_of_its_own(auth, reason):
    port = free_port()
    process = flower(port, **({} if auth is None else {"FLOWER_BASIC_AUTH": auth}))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert reason in stderr


def test_flower_starts_in_production_behind_the_password_it_was_given():
    port = free_port()
    process = flower(port, FLOWER_BASIC_AUTH="ops:a-long-password")
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1][-2000:]
            try:
                anonymous = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "Flower did not start"
                time.sleep(0.5)
        assert anonymous.status_code == 401
        assert requests.get(url, auth=("ops", "a-long-password"), timeout=10).status_code == 200
        # The password was handed over in the environment, not on the command line.
        assert b"a-long-password" not in Path(f"/proc/{process.pid}/cmdline").read_bytes()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)
