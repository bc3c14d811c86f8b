"""Thin tasks: load by id, call one service. Retry policy and failure handling live in the base.

Every step is acks_late + reject_on_worker_lost (a message is acknowledged only after the step
ran, and redelivered if the worker dies), and idempotent at the database, so redelivery is safe.
"""

import logging
import random
from datetime import timedelta

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orders import services
from orders.provider.errors import RateLimitWait, Throttled, TransientError
from project.retry import backoff_with_jitter, max_countdown

logger = logging.getLogger(__name__)

RETRYABLE = (
    TransientError,
    OperationalError,
    InterfaceError,
    RedisConnectionError,  # the limiter's Redis; the broker may be another server
    RedisTimeoutError,
)
# The broker itself is unreachable: the step's own work is committed (or not started), but its
# retry or the chain's next link could not be sent. That is no reason to fail the order: the
# stuck-order sweeper re-dispatches it from its status once the broker is back.
BROKER_UNREACHABLE = (BrokerError, RedisConnectionError, RedisTimeoutError)
# Waiting for the provider's budget is not a failure, but 429s must not go on forever.
MAX_THROTTLED_RETRIES = 100


def backoff_seconds(errors_so_far: int) -> float:
    return backoff_with_jitter(
        attempt=errors_so_far,
        base=settings.PIPELINE_RETRY_BACKOFF_BASE,
        cap=settings.PIPELINE_RETRY_BACKOFF_MAX,
    )


class PipelineStep(Task):
    """Base for the pipeline's steps: transient errors retry with backoff, 429s wait without
    spending the error budget, and a step out of retries dead-letters the order."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # the budget is enforced in run_step, which tells throttling from errors
    step = ""

    def run_step(self, service, order_id: str, throttled: int, **arguments):
        attempt = self.request.retries + 1
        try:
            return service(order_id=order_id, **arguments)
        except Throttled as exc:
            if throttled >= MAX_THROTTLED_RETRIES and not isinstance(exc, RateLimitWait):
                raise
            countdown = min(exc.retry_after, max_countdown()) + random.uniform(0, 0.25)
            if not isinstance(exc, RateLimitWait):  # our own pacing is not news; a 429 is
                self._record_retry(order_id, attempt, exc, countdown, throttled=True)
            raise self.retry(exc=exc, countdown=countdown, kwargs={"throttled": throttled + 1})
        except RETRYABLE as exc:
            errors_so_far = self.request.retries - throttled
            if errors_so_far >= settings.PIPELINE_MAX_RETRIES:
                raise
            countdown = backoff_seconds(errors_so_far)
            self._record_retry(order_id, attempt, exc, countdown, throttled=False)
            raise self.retry(exc=exc, countdown=countdown, kwargs={"throttled": throttled})

    def _record_retry(self, order_id, attempt, exc, countdown, *, throttled: bool) -> None:
        try:
            services.order_step_retry_record(
                order_id=order_id,
                step=self.step,
                attempt=attempt,
                error=str(exc) or exc.__class__.__name__,
                countdown=countdown,
                throttled=throttled,
            )
        except Exception:  # the timeline must never stop a retry
            logger.exception("could not record a retry", extra={"order_id": order_id})

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        order_id = kwargs.get("order_id") or (args[0] if args else None)
        if order_id is None:
            return
        if isinstance(exc, BROKER_UNREACHABLE):
            services.order_step_interrupt_record(
                order_id=order_id, step=self.step, error=f"{exc.__class__.__name__}: {exc}"
            )
            return
        services.order_fail(
            order_id=order_id,
            step=self.step,
            task_name=self.name,
            task_id=task_id,
            args=list(args),
            kwargs=dict(kwargs),
            exception=f"{exc.__class__.__name__}: {exc}",
            traceback=str(einfo),
            attempts=self.request.retries + 1,
        )


@shared_task(
    base=PipelineStep,
    bind=True,
    name="orders.authorize_payment",
    step="authorize_payment",
    rate_limit=settings.PAYMENT_PROVIDER_RATE_LIMIT,
)
def authorize_payment(self, order_id: str, throttled: int = 0) -> str:
    return self.run_step(
        services.payment_authorize, order_id, throttled, attempt=self.request.retries + 1
    ).status


@shared_task(base=PipelineStep, bind=True, name="orders.check_cart_line", step="check_cart")
def check_cart_line(self, order_id: str, line_id: int, throttled: int = 0) -> bool | None:
    return self.run_step(services.cart_line_check, order_id, throttled, line_id=line_id)


@shared_task(base=PipelineStep, bind=True, name="orders.verify_cart", step="check_cart")
def verify_cart(self, order_id: str, throttled: int = 0) -> str:
    return self.run_step(
        services.cart_verify, order_id, throttled, attempt=self.request.retries + 1
    ).status


@shared_task(
    base=PipelineStep,
    bind=True,
    name="orders.confirm_order",
    step="confirm_order",
    rate_limit=settings.PAYMENT_PROVIDER_RATE_LIMIT,
)
def confirm_order(self, order_id: str, throttled: int = 0) -> str:
    return self.run_step(
        services.order_confirm, order_id, throttled, attempt=self.request.retries + 1
    ).status


@shared_task(
    bind=True,
    name="orders.start_pipeline",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    max_retries=10,
)
def start_pipeline(self, order_id: str, from_step: str | None = None) -> bool:
    return services.order_pipeline_start(order_id=order_id, from_step=from_step)


@shared_task(name="orders.relay_outbox", acks_late=True, ignore_result=True)
def relay_outbox() -> int:
    return services.outbox_relay()


@shared_task(name="orders.sweep_stuck_orders", acks_late=True, ignore_result=True)
def sweep_stuck_orders() -> int:
    stuck_for = timedelta(seconds=settings.STUCK_ORDER_SECONDS)
    services.batch_finish_all_done()
    services.order_outcome_notification_sweep(ended_before=stuck_for)
    return len(services.order_stuck_sweep(stuck_for=stuck_for))


@shared_task(
    name="orders.start_batch",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    max_retries=10,
)
def start_batch(batch_id: str) -> bool:
    return services.batch_pipeline_start(batch_id=batch_id)


@shared_task(
    name="orders.finish_batch",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    max_retries=10,
)
def finish_batch(batch_id: str) -> bool:
    return services.batch_finish_if_done(batch_id=batch_id)
