"""A jittery link on loopback: a TCP proxy that delays every chunk by a random one-way latency.

    .venv/bin/python bench/jitter_proxy.py --upstream 127.0.0.1:8100 --delay 5-60 [--port 8101]

The provider sits across the internet, not on loopback: tens of milliseconds each way, varying
per request. Each chunk read from either side is forwarded after its own delay, drawn uniformly
from ``delay`` (milliseconds), independently per direction; a chunk never overtakes the one
before it on the same connection (TCP keeps order), so a chunk drawn shorter than its
predecessor's remaining delay waits for it. One HTTP request or response on a kept-alive
connection is normally one chunk, so every request draws its own latency both ways.

Used by bench/rate_limit.py (the jittery-link configurations) through :class:`JitterProxyProcess`,
which runs the proxy in a process of its own so its timing does not wait for the benchmark's
interpreter lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import random
import sys
import time

CHUNK = 65536


class JitterProxy:
    def __init__(
        self,
        upstream: tuple[str, int],
        delay: tuple[float, float],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> None:
        low, high = delay
        if not 0 <= low <= high:
            raise ValueError("delay: 0 <= low <= high (seconds)")
        self.upstream = upstream
        self.delay = (low, high)
        self.host, self.port = host, port
        self._random = random.Random(seed)
        self.chunks = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction: each chunk leaves at max(arrival + its delay, previous)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                release, data = await queue.get()
                if not data:
                    break
                pause = release - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.create_task(send())
        last_release = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                self.chunks += 1
                release = max(time.monotonic() + self._random.uniform(*self.delay), last_release)
                last_release = release
                queue.put_nowait((release, data))
        except OSError:
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await sender

    async def _handle(self, client_reader, client_writer) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer),
                self._pipe(upstream_reader, client_writer),
            )
        finally:
            for writer in (client_writer, upstream_writer):
                with contextlib.suppress(OSError):
                    writer.close()

    async def serve(self, ready=None) -> None:
        server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready(self.port)
        async with server:
            await server.serve_forever()


def _serve(connection, upstream: tuple[str, int], delay: tuple[float, float], seed) -> None:
    proxy = JitterProxy(upstream, delay, seed=seed)
    asyncio.run(proxy.serve(ready=connection.send))


class JitterProxyProcess:
    """The proxy in a process of its own; ``url`` is its http://127.0.0.1:<port>."""

    def __init__(
        self, upstream: tuple[str, int], delay: tuple[float, float], seed: int | None = None
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, upstream, delay, seed), daemon=True
        )
        self._process.start()
        if not self._connection.poll(30):
            raise RuntimeError("the jitter proxy did not start")
        self.port: int = self._connection.recv()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(timeout=10)


def parse_delay(text: str) -> tuple[float, float]:
    """ "5-60" (milliseconds) -> (0.005, 0.06)."""
    low, sep, high = text.partition("-")
    try:
        bounds = (float(low) / 1000, float(high if sep else low) / 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad delay {text!r}; expected e.g. 5-60") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"bad delay {text!r}; expected low <= high")
    return bounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--delay", type=parse_delay, default=(0.005, 0.06), help="ms, e.g. 5-60")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    proxy = JitterProxy((host, int(port)), args.delay, port=args.port, seed=args.seed)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(proxy.serve(ready=lambda p: print(f"listening on 127.0.0.1:{p}", flush=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
