"""Serve the sandbox payment provider (orders.provider.sandbox) over HTTP until interrupted."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from orders.provider.sandbox import SandboxProvider


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the sandbox payment provider, the HTTP gateway the pipeline and benchmarks call."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8100)
        parser.add_argument(
            "--rate-limit",
            type=int,
            default=None,
            help="Requests per API key per window; 0 disables (default: SANDBOX_RATE_LIMIT or 2).",
        )
        parser.add_argument("--window", type=float, default=1.0, help="Rate-limit window, s.")
        parser.add_argument("--latency", type=float, default=0.0, help="Delay added to answers, s.")
        parser.add_argument(
            "--api-key",
            action="append",
            dest="api_keys",
            help="Accept only this bearer key (repeatable); by default any key is accepted.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        rate_limit = options["rate_limit"]
        if rate_limit is None:
            rate_limit = getattr(settings, "SANDBOX_RATE_LIMIT", 2)
        provider = SandboxProvider(
            host=options["host"],
            port=options["port"],
            rate_limit=rate_limit,
            window=options["window"],
            latency=options["latency"],
            api_keys=options["api_keys"],
            verbose=True,
        )
        # As PID 1 in a container, SIGTERM has no default action: turn it into a clean stop.
        signal.signal(signal.SIGTERM, _interrupt)
        limit = f"{rate_limit} req/{options['window']:g}s per key" if rate_limit else "no limit"
        try:
            self.stdout.write(
                f"Sandbox payment provider on {provider.url} ({limit}); Ctrl+C stops."
            )
            self.stdout.flush()
            provider.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            provider.stop()
