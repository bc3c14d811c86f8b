"""Thin tasks: load by id, call one service, send what it says. Names come from the workflow.

Every step is acks_late + reject_on_worker_lost (a message is acknowledged only after the step
ran, and redelivered if the worker dies), idempotent at the database, stamped with the order's
dispatch generation (a stale copy does nothing), and bounded against poison: a message whose
deliveries keep killing their worker is dead-lettered after PIPELINE_MAX_DELIVERIES.
"""

import logging
import random
from datetime import timedelta

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orders import pipeline, services, workflow
from orders.provider.errors import RateLimitWait, Throttled, TransientError
from project import deliveries
from project.broker import queue_depths
from project.housekeeping import chord_counters_prune, task_results_prune
from project.retry import backoff_with_jitter, cap_countdown

logger = logging.getLogger(__name__)

RETRYABLE = (
    TransientError,
    OperationalError,
    InterfaceError,
    RedisConnectionError,  # the limiter's Redis; the broker may be another server
    RedisTimeoutError,
    SoftTimeLimitExceeded,  # a step cut short; it is idempotent, so it runs again
)
# The broker itself is unreachable: the step's own work is committed (or not started), but its
# retry or the next link could not be sent. That is no reason to fail the order: its lease runs
# out and recovery re-dispatches it once the broker is back.
BROKER_UNREACHABLE = (BrokerError, RedisConnectionError, RedisTimeoutError)
# Real 429s from the provider, beyond which the step counts as failing. Our own pacing (waiting
# for a limiter slot) is never counted: it is the limiter doing its job.
MAX_THROTTLED_RETRIES = 20


def _order_of(args, kwargs) -> tuple[str | None, int | None]:
    order_id = kwargs.get("order_id") or (args[0] if args else None)
    return (str(order_id) if order_id else None), kwargs.get("run")


class PipelineStep(Task):
    """Base of the steps: generation and poison guards, retries that tell pacing, 429s and
    errors apart, and a dead letter with settlement when a step cannot finish."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # the budgets are enforced in run_step
    step = ""

    def __call__(self, *args, **kwargs):
        order_id, run = _order_of(args, kwargs)
        request = self.request
        if order_id and not request.is_eager:
            if not services.order_message_is_current(order_id=order_id, run=run):
                logger.info("stale message of an older dispatch, skipped", extra={"run": run})
                request.chain = None
                return None
            delivery = deliveries.delivery_started(task_id=request.id, retries=request.retries)
            if delivery > settings.PIPELINE_MAX_DELIVERIES:
                self._poisoned(order_id, delivery - 1)
                deliveries.delivery_finished(task_id=request.id, retries=request.retries)
                request.chain = None
                return None
        try:
            return super().__call__(*args, **kwargs)
        finally:
            if order_id and not request.is_eager:
                deliveries.delivery_finished(task_id=request.id, retries=request.retries)

    def run_step(self, service, order_id: str, **arguments):
        request = self.request
        waits, throttled = request.kwargs.get("waits", 0), request.kwargs.get("throttled", 0)
        attempt = request.retries + 1
        try:
            return service(order_id=order_id, **arguments)
        except RateLimitWait as exc:  # our own limiter: come back for the slot
            countdown = cap_countdown(exc.retry_after) + random.uniform(0, 0.05)
            raise self._retry_with(exc, countdown, waits=waits + 1)
        except Throttled as exc:  # a real 429: honour Retry-After, within its own budget
            if throttled >= MAX_THROTTLED_RETRIES:
                raise
            countdown = cap_countdown(exc.retry_after) + random.uniform(0, 0.25)
            self._record_retry(order_id, attempt, exc, countdown, throttled=True)
            raise self._retry_with(exc, countdown, throttled=throttled + 1)
        except RETRYABLE as exc:
            errors_so_far = request.retries - waits - throttled
            if errors_so_far >= settings.PIPELINE_MAX_RETRIES:
                raise
            countdown = cap_countdown(
                backoff_with_jitter(
                    attempt=errors_so_far,
                    base=settings.PIPELINE_RETRY_BACKOFF_BASE,
                    cap=settings.PIPELINE_RETRY_BACKOFF_MAX,
                )
            )
            self._record_retry(order_id, attempt, exc, countdown, throttled=False)
            raise self._retry_with(exc, countdown)

    def _retry_with(self, exc, countdown: float, **counters):
        return self.retry(exc=exc, countdown=countdown, kwargs={**self.request.kwargs, **counters})

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

    def _poisoned(self, order_id: str, deaths: int) -> None:
        logger.error(
            "poison message: its deliveries keep killing the worker",
            extra={"order_id": order_id, "task": self.name, "deliveries": deaths},
        )
        services.order_fail(
            order_id=order_id,
            step=self.step,
            task_name=self.name,
            task_id=self.request.id,
            args=list(self.request.args or []),
            kwargs=dict(self.request.kwargs or {}),
            exception=f"WorkerLost: {deaths} deliveries ended with their worker killed",
            traceback="",
            attempts=deaths,
            reason="poison",
        )

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        order_id, _run = _order_of(args, kwargs)
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


class SettlementStep(PipelineStep):
    """Settlement out of retries is not a new failure: the order stays `settling` and its lease
    runs out, so recovery starts another round until the provider answers."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        order_id, _run = _order_of(args, kwargs)
        if order_id:
            services.order_step_interrupt_record(
                order_id=order_id, step=self.step, error=f"{exc.__class__.__name__}: {exc}"
            )

    def _poisoned(self, order_id: str, deaths: int) -> None:
        logger.error(
            "settlement keeps killing its worker; recovery will try again",
            extra={"order_id": order_id, "deliveries": deaths},
        )


def _stop_chain_if_done(task: Task, order) -> None:
    """A declined order skips the steps it does not need."""
    if order.is_terminal:
        task.request.chain = None


@shared_task(base=PipelineStep, bind=True, name=workflow.AUTHORIZE_PAYMENT, step=workflow.AUTHORIZE)
def authorize_payment(self, order_id: str, run: int | None = None, **_counters) -> str:
    order = self.run_step(services.payment_authorize, order_id, attempt=self.request.retries + 1)
    _stop_chain_if_done(self, order)
    return order.status


@shared_task(base=PipelineStep, bind=True, name=workflow.CHECK_CART_LINE, step=workflow.CHECK_CART)
def check_cart_line(self, order_id: str, line_id: int, run: int | None = None, **_counters) -> bool:
    moved_on = self.run_step(services.cart_line_check, order_id, line_id=line_id)
    if moved_on:  # this check completed the cart: the join sends the confirmation, once
        pipeline.confirmation(order_id=order_id, run=run).apply_async()
    return moved_on


@shared_task(base=PipelineStep, bind=True, name=workflow.VERIFY_CART, step=workflow.CHECK_CART)
def verify_cart(self, order_id: str, run: int | None = None, **_counters) -> str:
    return self.run_step(services.cart_verify, order_id, attempt=self.request.retries + 1).status


@shared_task(base=PipelineStep, bind=True, name=workflow.CONFIRM_ORDER, step=workflow.CONFIRM)
def confirm_order(self, order_id: str, run: int | None = None, **_counters) -> str:
    return self.run_step(services.order_confirm, order_id, attempt=self.request.retries + 1).status


@shared_task(base=SettlementStep, bind=True, name=workflow.SETTLE_ORDER, step=workflow.SETTLE)
def settle_order(self, order_id: str, run: int | None = None, **_counters) -> str:
    return self.run_step(services.order_settle, order_id, attempt=self.request.retries + 1).status


# Housekeeping and dispatch: retried briefly on infrastructure errors, within the countdown cap.
DISPATCH_OPTIONS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError, InterfaceError, BrokerError),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(name=workflow.START_PIPELINE, **DISPATCH_OPTIONS)
def start_pipeline(order_id: str, run: int = 0, from_step: str | None = None) -> bool:
    dispatch = services.order_dispatch_claim(order_id=order_id, run=run, from_step=from_step)
    if dispatch is None:
        return False
    pipeline.order_canvas(
        order_id=dispatch.order_id,
        run=dispatch.run,
        from_step=dispatch.from_step,
        line_ids=dispatch.line_ids,
    ).apply_async()
    return True


@shared_task(name=workflow.START_BATCH, **DISPATCH_OPTIONS)
def start_batch(batch_id: str) -> int:
    dispatches = services.batch_dispatch_claim(batch_id=batch_id)
    if dispatches:
        pipeline.batch_canvas(dispatches).apply_async()
    return len(dispatches)


@shared_task(name=workflow.FINISH_BATCH, **DISPATCH_OPTIONS)
def finish_batch(batch_id: str) -> bool:
    return services.batch_finish_if_done(batch_id=batch_id)


@shared_task(name=workflow.RELAY_OUTBOX, acks_late=True, ignore_result=True)
def relay_outbox() -> int:
    return services.outbox_relay()


@shared_task(name=workflow.RECOVER_ORDERS, acks_late=True, ignore_result=True)
def recover_orders() -> int:
    """Re-dispatch lost work (leases that ran out), then finish batches whose last orders ended
    together."""
    depths = queue_depths(set(workflow.STEP_QUEUES.values()))
    claims = services.order_recovery_claim(queue_depths=depths)
    for claim in claims:
        pipeline.order_canvas(
            order_id=claim.order_id,
            run=claim.run,
            from_step=claim.from_step,
            line_ids=claim.line_ids,
        ).apply_async()
    services.batch_finish_all_done()
    return len(claims)


@shared_task(name=workflow.RECONCILE_PAYMENTS, acks_late=True, ignore_result=True)
def reconcile_payments() -> dict:
    report = services.payments_reconcile()
    return {"checked": report.checked, "fixed": report.fixed, "errors": report.errors}


@shared_task(name=workflow.PRUNE_TABLES, acks_late=True, ignore_result=True)
def prune_tables() -> dict:
    days = timedelta(days=1)
    # Chord counters first: they are judged by their members' results, pruned next.
    chord_counters = chord_counters_prune(older_than=days)
    return {
        "outbox": services.outbox_prune(older_than=settings.PRUNE_OUTBOX_AFTER_DAYS * days),
        "chord_counters": chord_counters,
        "task_results": task_results_prune(
            older_than=settings.PRUNE_TASK_RESULTS_AFTER_DAYS * days
        ),
    }
