"""Switch the running sandbox provider's faults (outage, lost answers) over its control endpoint.

    manage.py sandbox_faults status
    manage.py sandbox_faults outage on [--mode drop|503]
    manage.py sandbox_faults outage off
    manage.py sandbox_faults drop-after-effect --path capture --count 1 [--method POST]
    manage.py sandbox_faults clear

The stack keeps running: only the sandbox changes how it answers (see orders.provider.sandbox).
"""

from __future__ import annotations

import json
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.provider.sandbox import FAULTS_PATH, OUTAGE_MODES

TIMEOUT_SECONDS = 5.0


class Command(BaseCommand):
    help = "Switch the sandbox payment provider into an outage and back, or lose answers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            default=None,
            help="The sandbox's base URL (default: PAYMENT_PROVIDER_URL).",
        )
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("status", help="Show the faults switched on.")
        actions.add_parser("clear", help="Switch every fault off.")
        outage = actions.add_parser("outage", help="Every provider call fails until switched off.")
        outage.add_argument("state", choices=("on", "off"))
        outage.add_argument(
            "--mode",
            choices=OUTAGE_MODES,
            default="drop",
            help="drop: close connections without an answer (default); 503: answer 503.",
        )
        lost = actions.add_parser(
            "drop-after-effect",
            help="The next matching calls take effect but their answers are lost.",
        )
        lost.add_argument(
            "--path", required=True, help="Regular expression searched in the path, e.g. capture"
        )
        lost.add_argument("--count", type=int, default=1, help="How many answers to lose.")
        lost.add_argument("--method", default=None, help="Only this HTTP method, e.g. POST.")

    def handle(self, *args: Any, **options: Any) -> None:
        url = (options["url"] or settings.PAYMENT_PROVIDER_URL).rstrip("/") + FAULTS_PATH
        action = options["action"]
        if action == "status":
            state = self._call("GET", url)
        else:
            state = self._call("POST", url, self._body(action, options))
        self.stdout.write(json.dumps(state, sort_keys=True))

    @staticmethod
    def _body(action: str, options: dict[str, Any]) -> dict[str, Any]:
        if action == "clear":
            return {"clear": True}
        if action == "outage":
            return {"outage": options["state"] == "on", "mode": options["mode"]}
        if options["count"] < 1:
            raise CommandError("--count must be at least 1")
        rule: dict[str, Any] = {"path": options["path"], "count": options["count"]}
        if options["method"]:
            rule["method"] = options["method"].upper()
        return {"drop_after_effect": rule}

    @staticmethod
    def _call(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = requests.request(method, url, json=body, timeout=TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            raise CommandError(f"the sandbox at {url} did not answer: {exc}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200 or not isinstance(payload, dict):
            error = payload.get("error") if isinstance(payload, dict) else None
            detail = error.get("message") if isinstance(error, dict) else None
            raise CommandError(
                f"the sandbox at {url} answered {response.status_code}: {detail or response.text}"
            )
        return payload
