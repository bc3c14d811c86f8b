"""The same code on RabbitMQ: the pipeline suite runs again with an AMQP broker.

The run gets a vhost of its own (created with rabbitmqctl, or the management API when that is
what the machine offers, and deleted afterwards), so its fixed queue names (orders, provider,
notifications) never meet another suite's or a running stack's on vhost "/". The cluster-wide
limiter and the live updates still use Redis (REDIS_URL).
"""

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

HOST = "127.0.0.1"
USER, PASSWORD = "guest", "guest"
MANAGEMENT_API = f"http://{HOST}:15672/api"
BASE_DIR = Path(__file__).resolve().parent.parent
QUEUES = {"orders", "provider", "notifications"}


def rabbitmq_answers() -> bool:
    try:
        socket.create_connection((HOST, 5672), timeout=2).close()
    except OSError:
        return False
    return True


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess | None:
    if shutil.which("rabbitmqctl") is None:
        return None
    try:
        return subprocess.run(
            ["rabbitmqctl", "--quiet", *args], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


class _Rabbitmqctl:
    def create(self, vhost: str) -> bool:
        added = _rabbitmqctl("add_vhost", vhost)
        if added is None or added.returncode != 0:
            return False
        granted = _rabbitmqctl("set_permissions", "-p", vhost, USER, ".*", ".*", ".*")
        return granted is not None and granted.returncode == 0

    def queues(self, vhost: str) -> set[str]:
        listed = _rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name")
        return set(listed.stdout.split()) if listed is not None else set()

    def delete(self, vhost: str) -> None:
        _rabbitmqctl("delete_vhost", vhost)


class _ManagementApi:
    def __init__(self) -> None:
        self.session = requests.Session()
        self.session.auth = (USER, PASSWORD)

    def create(self, vhost: str) -> bool:
        try:
            created = self.session.put(f"{MANAGEMENT_API}/vhosts/{vhost}", timeout=10)
            granted = self.session.put(
                f"{MANAGEMENT_API}/permissions/{vhost}/{USER}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
                timeout=10,
            )
        except requests.RequestException:
            return False
        return created.ok and granted.ok

    def queues(self, vhost: str) -> set[str]:
        listed = self.session.get(f"{MANAGEMENT_API}/queues/{vhost}", timeout=10)
        return {queue["name"] for queue in listed.json()} if listed.ok else set()

    def delete(self, vhost: str) -> None:
        self.session.delete(f"{MANAGEMENT_API}/vhosts/{vhost}", timeout=10)


@contextmanager
def private_vhost(vhost: str) -> Iterator[_Rabbitmqctl | _ManagementApi]:
    for admin in (_Rabbitmqctl(), _ManagementApi()):
        if admin.create(vhost):
            break
    else:
        pytest.skip("cannot create a vhost (neither rabbitmqctl nor the management API works)")
    try:
        yield admin
    finally:
        admin.delete(vhost)


@pytest.mark.pipeline
@pytest.mark.skipif(not rabbitmq_answers(), reason=f"no RabbitMQ answers on {HOST}:5672")
def test_the_pipeline_suite_passes_on_rabbitmq():
    run_id = f"{os.environ['ORDERFLOW_TEST_RUN_ID']}-amqp"
    vhost = f"orderflow-test-{run_id}"
    with private_vhost(vhost) as admin:
        env = {
            **os.environ,
            "TEST_CELERY_BROKER_URL": f"amqp://{USER}:{PASSWORD}@{HOST}:5672/{vhost}",
            "ORDERFLOW_TEST_RUN_ID": run_id,
        }
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/orders/test_pipeline.py",
            ],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
        assert " passed" in result.stdout and "failed" not in result.stdout
        # The run's queues were declared in its own vhost, so nothing of it touched "/".
        assert admin.queues(vhost) >= QUEUES
