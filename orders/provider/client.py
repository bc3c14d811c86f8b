"""HTTP client for the payment provider (SPEC §4).

Every POST carries an idempotency key derived from the order and the step, so a retried or
duplicated task can never charge twice; every call has a timeout; 429 and 5xx are retryable,
402 is a business outcome, other 4xx are final.

Every call takes a slot from the cluster-wide limiter first (project/ratelimit.py), on behalf of
a customer and a lane (``single`` or ``batch``) so the fair limiter can share the provider
between customers; the idempotency key is the caller's ticket, so a task that re-schedules
itself keeps its place in line. What the provider shows about the network is fed back: each
call's send lateness and round trip (the limiter widens the window by what it needed) and each
429's Retry-After (no slot before it).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

import redis
import requests
import urllib3
from django.conf import settings

from project.ratelimit import (
    LANES,
    FairLimiter,
    RateLimitExceeded,
    Reservation,
    SlidingWindowLimiter,
    parse_weights,
    provider_limiter,
)
from project.retry import parse_retry_after

from .errors import PermanentError, RateLimitWait, Throttled, TransientError

logger = logging.getLogger(__name__)

_session = requests.Session()


@dataclass(frozen=True)
class ProviderPayment:
    id: str
    status: str
    amount: str
    currency: str


@dataclass(frozen=True)
class Declined:
    code: str


class PaymentProvider:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float,
        rate_limiter: SlidingWindowLimiter | None = None,
        max_inline_wait: float = 2.0,
        customer: str | None = None,
        lane: str = "single",
        weight: float = 1.0,
    ) -> None:
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}, not {lane!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.rate_limiter = rate_limiter
        self.max_inline_wait = max_inline_wait
        self.customer = customer or ANONYMOUS_CUSTOMER
        self.lane = lane
        self.weight = weight

    def authorize(
        self, *, amount: Decimal, currency: str, source: str, reference: str, idempotency_key: str
    ) -> ProviderPayment | Declined:
        response = self._request(
            "POST",
            "/v1/payments",
            json={
                "amount": f"{amount:.2f}",
                "currency": currency,
                "source": source,
                "reference": reference,
            },
            idempotency_key=idempotency_key,
        )
        if response.status_code == 402:
            return Declined(code=_error_code(response) or "declined")
        body = self._expect(response, 201)
        return ProviderPayment(
            id=body["id"], status=body["status"], amount=body["amount"], currency=body["currency"]
        )

    def capture(self, *, payment_id: str, idempotency_key: str) -> str:
        response = self._request(
            "POST", f"/v1/payments/{payment_id}/capture", idempotency_key=idempotency_key
        )
        return self._expect(response, 200)["status"]

    def refund(self, *, payment_id: str, idempotency_key: str) -> str:
        response = self._request(
            "POST", f"/v1/payments/{payment_id}/refund", idempotency_key=idempotency_key
        )
        return self._expect(response, 200)["status"]

    def retrieve(self, *, payment_id: str) -> ProviderPayment:
        """What the provider holds for a payment now (settlement and reconciliation ask this)."""
        body = self._expect(self._request("GET", f"/v1/payments/{payment_id}"), 200)
        return ProviderPayment(
            id=body["id"], status=body["status"], amount=body["amount"], currency=body["currency"]
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict | None = None,
        idempotency_key: str | None = None,
    ) -> requests.Response:
        reservation = self._wait_for_slot(ticket=idempotency_key)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        sent_at = time.monotonic()
        try:
            response = _session.request(
                method, self.base_url + path, json=json, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            self._observe(reservation, sent_at)
            raise TransientError(
                f"provider unreachable: {exc.__class__.__name__}", maybe_acted=not _never_sent(exc)
            ) from exc
        self._observe(reservation, sent_at)
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), default=1.0)
            self._penalize(retry_after)
            raise Throttled("provider answered 429", retry_after=retry_after)
        if response.status_code >= 500:
            # 503: unavailable, did nothing. Other 5xx (a gateway timeout) may hide an effect.
            raise TransientError(
                f"provider answered {response.status_code}",
                maybe_acted=response.status_code != 503,
            )
        return response

    def _wait_for_slot(self, *, ticket: str | None) -> Reservation | None:
        """Take a slot from the cluster-wide limiter before every call.

        A slot (fair: this caller's turn) within max_inline_wait is waited for in place: the
        worker keeps the pace with no broker round trip, and the wait stays far below the
        visibility timeout. A later one is not taken; the task is re-scheduled for then
        (RateLimitWait), so no worker sleeps for long and no message is held unacknowledged
        past its timeout.
        """
        limiter = self.rate_limiter
        if limiter is None:
            return None
        if isinstance(limiter, FairLimiter):
            try:
                reservation = limiter.acquire_turn(
                    customer=self.customer,
                    lane=self.lane,
                    ticket=ticket,
                    weight=self.weight,
                    max_wait=self.max_inline_wait,
                )
            except RateLimitExceeded as exc:
                raise RateLimitWait(
                    "waiting for the provider's rate limit", retry_after=exc.wait
                ) from None
        else:
            reservation = limiter.reserve(
                max_wait=self.max_inline_wait, customer=self.customer, lane=self.lane
            )
            if not reservation.granted:
                raise RateLimitWait(
                    "waiting for the provider's rate limit", retry_after=reservation.wait
                )
            if reservation.wait > 0:
                time.sleep(reservation.wait)
        if reservation.wait > 0:
            logger.info(
                "provider call waited for its rate-limit slot",
                extra={"wait_seconds": round(reservation.wait, 3), "lane": self.lane},
            )
        return reservation

    def _observe(self, reservation: Reservation | None, sent_at: float) -> None:
        if reservation is None or self.rate_limiter is None:
            return
        try:
            self.rate_limiter.observe(reservation, sent_at=sent_at, answered_at=time.monotonic())
        except redis.RedisError:  # the call itself happened; losing one sample is harmless
            logger.warning("could not report a provider round trip to the limiter")

    def _penalize(self, retry_after: float) -> None:
        if self.rate_limiter is None:
            return
        try:
            self.rate_limiter.penalize(retry_after)
        except redis.RedisError:
            logger.warning("could not report a 429 to the limiter")

    @staticmethod
    def _expect(response: requests.Response, status: int) -> dict:
        if response.status_code != status:
            raise PermanentError(
                f"provider answered {response.status_code}: {_error_code(response) or 'error'}"
            )
        try:
            return response.json()
        except ValueError as exc:
            # A 2xx whose body we cannot read: the provider may have acted. Retry (the call is
            # idempotent by key) rather than guess; settlement asks if retries run out.
            raise TransientError(f"provider answered {status} with an unreadable body") from exc


def _never_sent(exc: requests.RequestException) -> bool:
    """The request certainly never reached the provider: no connection was made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(
        reason, urllib3.exceptions.NewConnectionError
    )


def _error_code(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", {}).get("code", ""))
    except ValueError:
        return ""


ANONYMOUS_CUSTOMER = "-"  # calls made for no customer (operators' commands)


@functools.cache
def _weights(text: str) -> dict[str, float]:
    return parse_weights(text)


def get_provider(*, customer: str | None = None, lane: str = "single") -> PaymentProvider:
    """The client; `customer` and `lane` ("single" or "batch") are the caller's share of the
    provider's budget at the cluster limiter."""
    weights = _weights(settings.PAYMENT_PROVIDER_CUSTOMER_WEIGHTS)
    return PaymentProvider(
        base_url=settings.PAYMENT_PROVIDER_URL,
        api_key=settings.PAYMENT_PROVIDER_API_KEY,
        timeout=settings.PAYMENT_PROVIDER_TIMEOUT,
        rate_limiter=provider_limiter(),
        max_inline_wait=settings.PAYMENT_PROVIDER_MAX_INLINE_WAIT,
        customer=customer,
        lane=lane,
        weight=weights.get(customer or ANONYMOUS_CUSTOMER, 1.0),
    )
