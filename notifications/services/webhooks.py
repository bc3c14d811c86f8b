"""Webhooks the way Stripe and Saleor send them: one signed POST per event and endpoint, retried
with backoff, every attempt logged, replayable when it failed.

The delivery task calls ``webhook_delivery_send`` for one attempt and re-schedules itself for the
time it returns (``retry_in``). The database decides what happens: a delivery that is not pending
or not due yet is left alone, and a lease lets only one copy of the task send at a time.
"""

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from notifications import kinds, transport
from notifications.destinations import (
    DestinationError,
    DestinationRefused,
    resolve_destination,
)
from notifications.models import (
    Notification,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from notifications.signing import InvalidSecret, secret_generate, signature_headers
from project.housekeeping import delete_in_batches
from project.ratelimit import SlidingWindowLimiter, parse_rate
from project.redis_client import get_redis
from project.retry import backoff_with_jitter, cap_countdown, parse_retry_after

logger = logging.getLogger(__name__)

USER_AGENT = "Orderflow-Webhooks/1.0"
DELIVER_WEBHOOK_TASK = "notifications.deliver_webhook"  # routed to the notifications queue
MAX_EVENTS_PER_ENDPOINT = 50
RATE_LIMIT_NAMESPACE = "orderflow:webhooks:ratelimit"
# A sender holds the delivery this long beyond its own timeouts before another copy may take over.
LEASE_MARGIN = timedelta(seconds=30)


class WebhookError(Exception):
    """Base class for the webhook services' errors."""


class InvalidWebhookEndpoint(WebhookError):
    """Bad input the user can fix; carries field errors in DRF's shape."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(str(errors))
        self.errors = errors


class WebhookEndpointLimitReached(WebhookError):
    """The user has as many endpoints as WEBHOOK_MAX_ENDPOINTS_PER_USER allows."""


class WebhookReplayNotAllowed(WebhookError):
    """Only a failed delivery to an active endpoint can be replayed."""


@dataclass(frozen=True)
class DeliveryOutcome:
    status: str  # the delivery's status after this call
    retry_in: float | None = None  # run the delivery again in this many seconds; None: done
    attempted: bool = False  # an attempt was made (and recorded)


# --- endpoints ----------------------------------------------------------------------------------


def webhook_endpoint_create(
    *, user: AbstractBaseUser, url: str, events: list[str], is_active: bool = True
) -> WebhookEndpoint:
    """Check the URL (scheme, public address), the kinds and the user's endpoint cap; the secret
    is generated here."""
    errors: dict[str, list[str]] = {}
    try:
        resolve_destination(url)
    except DestinationError as exc:
        errors["url"] = [str(exc)]
    try:
        events = _clean_events(events)
    except ValueError as exc:
        errors["events"] = [str(exc)]
    if errors:
        raise InvalidWebhookEndpoint(errors)
    limit = settings.WEBHOOK_MAX_ENDPOINTS_PER_USER
    with transaction.atomic():
        # The user's row is the lock: two concurrent creations cannot both take the last place.
        get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
        if WebhookEndpoint.objects.filter(user=user).count() >= limit:
            raise WebhookEndpointLimitReached(
                f"You have {limit} webhook endpoints, the most allowed; delete one first."
            )
        endpoint = WebhookEndpoint.objects.create(
            user=user, url=url, events=events, secret=secret_generate(), is_active=is_active
        )
    logger.info("webhook endpoint created", extra={"endpoint_id": endpoint.pk, "user_id": user.pk})
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint with its deliveries; a delivery task still queued finds nothing."""
    endpoint.delete()


def _clean_events(events: list[str]) -> list[str]:
    if not events:
        raise ValueError("Subscribe to at least one kind, or to '*' for all of them.")
    if len(events) > MAX_EVENTS_PER_ENDPOINT:
        raise ValueError(f"At most {MAX_EVENTS_PER_ENDPOINT} kinds.")
    known = set(kinds.event_kinds())
    unknown = [event for event in events if event != kinds.ALL_EVENTS and event not in known]
    if unknown:
        raise ValueError(
            f"Unknown kind(s): {', '.join(sorted(set(unknown)))}. "
            f"Known kinds: {', '.join(sorted(known))}, or '*' for all."
        )
    return list(dict.fromkeys(events))  # without duplicates, in the given order


# --- fan-out ------------------------------------------------------------------------------------


def webhook_event_id(*, notification: Notification) -> str:
    """Stable per event: the same for every endpoint and for every run of the notify task."""
    return "evt_" + hashlib.sha256(notification.dedupe_key.encode()).hexdigest()[:32]


def webhook_payload(*, notification: Notification) -> dict:
    return {
        "id": webhook_event_id(notification=notification),
        "type": notification.kind,
        "created": int(notification.created_at.timestamp()),
        "data": {
            **notification.data,
            "notification": {
                "id": notification.pk,
                "title": notification.title,
                "body": notification.body,
            },
        },
    }


def webhook_deliveries_create(*, notification: Notification) -> list[WebhookDelivery]:
    """One delivery per active endpoint of the user subscribed to the notification's kind.

    Unique per endpoint and notification: a second run of the notify task creates nothing and
    enqueues nothing. Endpoints created after the event do not receive it.
    """
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(
            user_id=notification.user_id,
            is_active=True,
            created_at__lte=notification.created_at,
        )
        if endpoint.subscribes_to(notification.kind)
    ]
    if not endpoints:
        return []
    payload = webhook_payload(notification=notification)
    created = []
    for endpoint in endpoints:
        try:
            with transaction.atomic():
                delivery, is_new = WebhookDelivery.objects.get_or_create(
                    endpoint=endpoint,
                    notification=notification,
                    defaults={
                        "event_kind": notification.kind,
                        "event_id": payload["id"],
                        "payload": payload,
                        "next_attempt_at": timezone.now(),
                    },
                )
        except IntegrityError:  # a concurrent duplicate of the notify task created it
            continue
        if not is_new:
            continue
        created.append(delivery)
        logger.info(
            "webhook delivery triggered",
            extra={
                "delivery_id": delivery.pk,
                "endpoint_id": endpoint.pk,
                "event_id": delivery.event_id,
                "event_kind": delivery.event_kind,
            },
        )
        transaction.on_commit(partial(webhook_delivery_enqueue, delivery_id=delivery.pk))
    return created


def webhook_delivery_enqueue(*, delivery_id: int, countdown: float | None = None) -> bool:
    """Publish the delivery task (by name: the tasks module imports this one); on a broker
    failure the sweep publishes it later."""
    if countdown is not None:
        # A countdown beyond Redis's visibility timeout would have the message delivered twice;
        # an early run finds the delivery not due yet and schedules itself again.
        countdown = cap_countdown(countdown)
    try:
        current_app.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], countdown=countdown)
    except Exception as exc:  # any broker failure: the delivery row stays pending
        logger.warning(
            "webhook delivery not published, the sweep will retry",
            extra={"delivery_id": delivery_id, "error": repr(exc)},
        )
        return False
    return True


# --- sending ------------------------------------------------------------------------------------


def webhook_delivery_send(*, delivery_id: int) -> DeliveryOutcome:
    """Make one attempt if the delivery is pending and due; record it; say when to come back."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None:  # the endpoint was deleted with its deliveries
        return DeliveryOutcome(status="missing")
    log = {"delivery_id": delivery.pk, "endpoint_id": delivery.endpoint_id}
    logger.info("webhook delivery received", extra=log)
    if delivery.status != WebhookDeliveryStatus.PENDING:
        return DeliveryOutcome(status=delivery.status)
    now = timezone.now()
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        # An early copy (a capped countdown, a duplicate): come back when it is due.
        return DeliveryOutcome(
            status=delivery.status, retry_in=(delivery.next_attempt_at - now).total_seconds()
        )
    if not _claim(delivery, now=now):
        # Another copy is sending right now; it schedules the next attempt itself.
        return DeliveryOutcome(status=delivery.status)
    try:
        return _attempt(delivery, log=log)
    except BaseException:
        _release(delivery)
        raise


def webhook_delivery_time_limit_record(*, delivery_id: int) -> DeliveryOutcome:
    """The sending task ran out of time (an endpoint trickling its answer byte by byte defeats
    per-read timeouts): count it as an attempt that timed out, so such an endpoint is retried
    with backoff and eventually fails instead of holding a worker again and again."""
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDeliveryStatus.PENDING:
        return DeliveryOutcome(status=delivery.status if delivery else "missing")
    result = transport.HttpResult(
        status_code=None,
        error="timeout: the attempt exceeded the task's time limit",
        duration_ms=0,
    )
    log = {"delivery_id": delivery.pk, "endpoint_id": delivery.endpoint_id}
    return _record_attempt(delivery, result, timezone.now(), final=False, log=log)


def _claim(delivery: WebhookDelivery, *, now) -> bool:
    lease = timedelta(
        seconds=settings.WEBHOOK_CONNECT_TIMEOUT
        + settings.WEBHOOK_READ_TIMEOUT
        + settings.WEBHOOK_RATE_LIMIT_MAX_INLINE_WAIT
    )
    return bool(
        WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDeliveryStatus.PENDING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(lease_until=now + lease + LEASE_MARGIN)
    )


def _release(delivery: WebhookDelivery, **changes) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(lease_until=None, **changes)


def _attempt(delivery: WebhookDelivery, *, log: dict) -> DeliveryOutcome:
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        result = transport.HttpResult(
            status_code=None, error="The endpoint is disabled; not sent.", duration_ms=0
        )
        return _record_attempt(delivery, result, timezone.now(), final=True, log=log)

    wait = _rate_limit_wait(endpoint)
    if wait is not None:
        retry_in = wait + random.uniform(0, 0.05)
        _release(delivery, next_attempt_at=timezone.now() + timedelta(seconds=retry_in))
        logger.info(
            "webhook delivery waits for the endpoint's rate limit",
            extra={**log, "retry_in": round(retry_in, 3)},
        )
        return DeliveryOutcome(status=delivery.status, retry_in=retry_in)

    attempted_at = timezone.now()
    try:
        # Checked again now (DNS may have changed); the POST goes to the address checked here.
        destination = resolve_destination(endpoint.url)
    except DestinationError as exc:
        result = transport.HttpResult(status_code=None, error=str(exc), duration_ms=0)
        refused = isinstance(exc, DestinationRefused)
        return _record_attempt(delivery, result, attempted_at, final=refused, log=log)

    body = webhook_body_encode(delivery.payload)
    try:
        # The event id is the webhook-id: the same on every attempt, retry and replay, so a
        # receiver can deduplicate on it; the timestamp and signature are made afresh each time.
        signed = signature_headers(endpoint.secret, message_id=delivery.event_id, body=body)
    except InvalidSecret as exc:  # no receiver could verify it: sending cannot help
        result = transport.HttpResult(
            status_code=None,
            error=f"Not sent: the endpoint's secret is invalid ({exc}).",
            duration_ms=0,
        )
        return _record_attempt(delivery, result, attempted_at, final=True, log=log)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **signed}
    result = transport.post(
        destination,
        body=body,
        headers=headers,
        connect_timeout=settings.WEBHOOK_CONNECT_TIMEOUT,
        read_timeout=settings.WEBHOOK_READ_TIMEOUT,
    )
    return _record_attempt(delivery, result, attempted_at, final=False, log=log)


def webhook_body_encode(payload: dict) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def _rate_limit_wait(endpoint: WebhookEndpoint) -> float | None:
    """Take a slot of the endpoint's budget (sleeping briefly if it is close); else the wait."""
    if not settings.WEBHOOK_RATE_LIMIT:
        return None
    limit, window = parse_rate(settings.WEBHOOK_RATE_LIMIT)
    # The creation time keeps keys apart across databases reset under one Redis (tests, dev).
    created_us = round(endpoint.created_at.timestamp() * 1_000_000)
    limiter = SlidingWindowLimiter(
        get_redis(),
        f"webhook-endpoint:{endpoint.pk}:{created_us}",
        limit,
        window,
        margin=0.0,
        namespace=RATE_LIMIT_NAMESPACE,
    )
    reservation = limiter.acquire(max_wait=settings.WEBHOOK_RATE_LIMIT_MAX_INLINE_WAIT)
    return None if reservation.granted else reservation.wait


def _record_attempt(
    delivery: WebhookDelivery,
    result: transport.HttpResult,
    attempted_at,
    *,
    final: bool,
    log: dict,
) -> DeliveryOutcome:
    attempt_number = delivery.attempt_count + 1
    code = result.status_code
    retry_in: float | None = None
    if code is not None and 200 <= code < 300:
        status = WebhookDeliveryStatus.SUCCEEDED
    elif final or (code is not None and code < 500 and code != 429):
        status = WebhookDeliveryStatus.FAILED  # 3xx (redirects are not followed) and 4xx
    elif attempt_number >= settings.WEBHOOK_MAX_ATTEMPTS:
        status = WebhookDeliveryStatus.FAILED
    else:
        status = WebhookDeliveryStatus.PENDING
        retry_after = _parse_retry_after(result.retry_after) if code == 429 else None
        retry_in = retry_after if retry_after is not None else _backoff_seconds(attempt_number)
    now = timezone.now()
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            attempted_at=attempted_at,
            status_code=code,
            duration_ms=result.duration_ms,
            error=result.error,
            response_body=result.body_excerpt,
        )
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=status,
            attempt_count=F("attempt_count") + 1,
            next_attempt_at=now + timedelta(seconds=retry_in) if retry_in is not None else None,
            delivered_at=now if status == WebhookDeliveryStatus.SUCCEEDED else None,
            lease_until=None,
        )
    extra = {
        **log,
        "attempt": attempt_number,
        "status_code": code,
        "error": result.error,
        "status": status,
    }
    if status == WebhookDeliveryStatus.SUCCEEDED:
        logger.info("webhook delivery handled", extra=extra)
    elif status == WebhookDeliveryStatus.FAILED:
        logger.warning("webhook delivery failed", extra=extra)
    else:
        logger.info("webhook delivery will retry", extra={**extra, "retry_in": retry_in})
    return DeliveryOutcome(status=status, retry_in=retry_in, attempted=True)


def _backoff_seconds(attempts_so_far: int) -> float:
    return backoff_with_jitter(
        attempt=attempts_so_far - 1,
        base=settings.WEBHOOK_RETRY_BACKOFF_BASE,
        cap=settings.WEBHOOK_RETRY_BACKOFF_MAX,
    )


def _parse_retry_after(value: str | None) -> float | None:
    """Capped, so that an endpoint cannot park a delivery."""
    seconds = parse_retry_after(value)
    return None if seconds is None else min(seconds, settings.WEBHOOK_RETRY_AFTER_MAX)


# --- replay and sweep ---------------------------------------------------------------------------


def webhook_delivery_replay(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a failed delivery again: a new round of attempts (earlier attempts stay logged)."""
    if not delivery.endpoint.is_active:
        raise WebhookReplayNotAllowed(
            f"Delivery {delivery.pk} cannot be replayed: its endpoint is disabled."
        )
    replayed = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDeliveryStatus.FAILED
    ).update(
        status=WebhookDeliveryStatus.PENDING,
        attempt_count=0,
        next_attempt_at=timezone.now(),
        lease_until=None,
        delivered_at=None,
    )
    delivery.refresh_from_db()
    if not replayed:
        raise WebhookReplayNotAllowed(
            f"Delivery {delivery.pk} is {delivery.status}; only failed deliveries can be replayed."
        )
    logger.info(
        "webhook delivery replayed",
        extra={"delivery_id": delivery.pk, "endpoint_id": delivery.endpoint_id},
    )
    transaction.on_commit(partial(webhook_delivery_enqueue, delivery_id=delivery.pk))
    return delivery


def webhook_deliveries_sweep(*, overdue_for: timedelta, limit: int = 500) -> int:
    """Re-publish pending deliveries nobody picked up (a lost message, a broker outage)."""
    now = timezone.now()
    overdue = (
        WebhookDelivery.objects.filter(
            status=WebhookDeliveryStatus.PENDING, next_attempt_at__lt=now - overdue_for
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    published = 0
    for delivery_id in list(overdue):
        published += webhook_delivery_enqueue(delivery_id=delivery_id)
    return published


def webhook_attempts_prune(*, older_than: timedelta, budget: float = 20.0) -> int:
    """Attempts of finished deliveries past their retention; the deliveries themselves stay, so
    the history of what was sent remains (with its count of attempts)."""
    cutoff = timezone.now() - older_than
    return delete_in_batches(
        WebhookAttempt.objects.filter(attempted_at__lt=cutoff)
        .exclude(delivery__status=WebhookDeliveryStatus.PENDING)
        .order_by("pk"),
        budget=budget,
    )
