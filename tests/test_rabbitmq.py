"""The same code on RabbitMQ: the pipeline suite runs again with an AMQP broker.

The cluster-wide limiter and the live updates still use Redis (REDIS_URL).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
BASE_DIR = Path(__file__).resolve().parent.parent


def rabbitmq_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.mark.pipeline
@pytest.mark.skipif(not rabbitmq_answers(), reason="no RabbitMQ answers on 127.0.0.1:5672")
def test_the_pipeline_suite_passes_on_rabbitmq():
    env = {
        **os.environ,
        "TEST_CELERY_BROKER_URL": AMQP_URL,
        "ORDERFLOW_TEST_RUN_ID": f"{os.environ['ORDERFLOW_TEST_RUN_ID']}-amqp",
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
