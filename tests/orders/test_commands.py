"""Operators' commands as the README writes them: bad input is one line, never a traceback."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from orders.provider.sandbox import SandboxProvider

BASE_DIR = Path(__file__).resolve().parent.parent.parent
WRAPPER = BASE_DIR / "bin" / "orderflow"
needs_the_venv = pytest.mark.skipif(
    not (BASE_DIR / ".venv" / "bin" / "python").exists(),
    reason="bin/orderflow runs the checkout's .venv, which make install creates",
)


@pytest.mark.parametrize("order_id", ["not-an-id", "12345", ""])
def test_replay_order_with_a_malformed_id_is_a_command_error(order_id):
    with pytest.raises(CommandError, match="is not an order id"):
        call_command("replay_order", order_id)


@pytest.mark.django_db
def test_replay_order_with_an_unknown_id_is_a_command_error():
    missing = uuid.uuid4()
    with pytest.raises(CommandError, match=f"No order {missing}"):
        call_command("replay_order", str(missing))


def test_replay_failed_with_a_bad_duration_is_a_command_error():
    with pytest.raises(CommandError, match="--since takes a duration"):
        call_command("replay_failed", "--since", "yesterday")


def _wrapper(*args: str) -> subprocess.CompletedProcess:
    environment = {
        key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"
    }
    return subprocess.run(
        [str(WRAPPER), *args],
        cwd="/",  # the wrapper finds the project itself
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_the_venv
def test_the_wrapper_prints_a_bad_id_as_one_line():
    result = _wrapper("replay_order", "not-an-id")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "CommandError: 'not-an-id' is not an order id (a UUID)."
    ]


@needs_the_venv
def test_the_wrapper_runs_the_sandbox_faults_command_from_anywhere():
    with SandboxProvider(rate_limit=0) as provider:
        result = _wrapper("sandbox_faults", "--url", provider.url, "outage", "on", "--mode", "503")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {
            "outage": True,
            "mode": "503",
            "drop_after_effect": [],
        }
        assert provider.faults()["outage"] is True
