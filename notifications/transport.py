"""One webhook POST to a checked address: timeouts, no redirects, no retries, a body excerpt.

urllib3 rather than requests because the connection must go to the address the SSRF check
resolved (destinations.py) while the Host header, SNI and certificate check use the URL's host
name; with requests the host would be resolved again at connect time.
"""

import time
from dataclasses import dataclass

import certifi
import urllib3

from .destinations import Destination

RESPONSE_EXCERPT_BYTES = 1024


@dataclass(frozen=True)
class HttpResult:
    status_code: int | None  # None when no response came back
    error: str  # empty when a response came back
    duration_ms: int
    body_excerpt: str = ""
    retry_after: str | None = None


def post(
    destination: Destination,
    *,
    body: bytes,
    headers: dict[str, str],
    connect_timeout: float,
    read_timeout: float,
) -> HttpResult:
    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    pool_options = {
        "host": destination.address,
        "port": destination.port,
        "timeout": timeout,
        "retries": False,
        "maxsize": 1,
    }
    if destination.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            **pool_options,
            server_hostname=destination.hostname,
            assert_hostname=destination.hostname,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
    else:
        pool = urllib3.HTTPConnectionPool(**pool_options)
    started = time.monotonic()
    try:
        try:
            response = pool.urlopen(
                "POST",
                destination.target,
                body=body,
                headers={**headers, "Host": destination.host_header},
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return HttpResult(
                status_code=None, error=_describe(exc), duration_ms=_elapsed_ms(started)
            )
        try:
            excerpt = response.read(RESPONSE_EXCERPT_BYTES)
        except (urllib3.exceptions.HTTPError, OSError):
            excerpt = b""  # the status is what counts; the body is only for the attempt log
        finally:
            response.release_conn()
        return HttpResult(
            status_code=response.status,
            error="",
            duration_ms=_elapsed_ms(started),
            body_excerpt=excerpt.decode("utf-8", errors="replace").replace("\x00", ""),
            retry_after=response.headers.get("Retry-After"),
        )
    finally:
        pool.close()


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _describe(exc: Exception) -> str:
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2.x: test it first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        kind = "connection error"
    elif isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        kind = "connect timeout"
    elif isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError):
        kind = "read timeout"
    elif isinstance(exc, urllib3.exceptions.SSLError):
        kind = "TLS error"
    else:
        kind = "connection error"
    return f"{kind}: {exc.__class__.__name__}: {exc}"[:2000]
