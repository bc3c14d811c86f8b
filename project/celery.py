"""The Celery app (the cookiecutter-django recipe): settings from the CELERY_ namespace, tasks
autodiscovered, and every project-level signal handler and worker step connected here.

(The orders app connects its own outbox and lease hooks in orders/signals.py.)
"""

import os

from celery import Celery, bootsteps, signals
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from django_structlog.celery import signals as task_log_signals
from django_structlog.celery.receivers import CeleryReceiver

from project import metrics, observability
from project.leases import LeaseHeartbeat
from project.retry import max_countdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("orderflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Renews the leases of whatever this worker holds (project/leases.py).
app.steps["consumer"].add(LeaseHeartbeat)


def check_time_budgets(app: Celery) -> None:
    """Every countdown and ETA a task can carry, plus its time limit, must stay under the
    visibility timeout, or Redis hands the waiting or running message to a second worker."""
    visibility = app.conf.broker_transport_options.get("visibility_timeout", 3600)
    cap = max_countdown()
    problems = []
    for task in app.tasks.values():
        if task.name.startswith("celery."):
            continue
        limit = task.time_limit or app.conf.task_time_limit or 0
        backoff_max = (
            getattr(task, "retry_backoff_max", 0) if getattr(task, "autoretry_for", ()) else 0
        )
        if limit + cap >= visibility:
            problems.append(f"{task.name}: time limit {limit}s + countdown cap {cap}s")
        if backoff_max > cap:
            problems.append(f"{task.name}: retry_backoff_max {backoff_max}s > cap {cap}s")
    if problems:
        raise ImproperlyConfigured(
            f"task budgets exceed the {visibility}s visibility timeout: " + "; ".join(problems)
        )


@signals.worker_init.connect
def _check_budgets_at_worker_start(sender=None, **_kwargs) -> None:
    check_time_budgets(app)


def _close_old_database_connections(sender=None, **_kwargs) -> None:
    """What Django does around every request: drop a connection past CONN_MAX_AGE or broken.

    Celery's Django fixup would otherwise open a new connection for every task (a PostgreSQL
    backend fork each time); CELERY_DB_REUSE_MAX hands the decision to this handler.
    """
    if not getattr(getattr(sender, "request", None), "is_eager", False):  # eager: caller's db
        close_old_connections()


signals.task_prerun.connect(_close_old_database_connections)
signals.task_postrun.connect(_close_old_database_connections)

# Logs: django-structlog's receiver. Every process that sends tasks stamps them with its log
# context (and logs task_enqueued); workers also log each task's lifecycle with the context
# bound, plus the order's correlation id.
task_logs = CeleryReceiver()
task_logs.connect_signals()


class TaskLogsStep(bootsteps.Step):
    """What django-structlog's DjangoStructLogInitStep does, with the receiver above: a second
    receiver (the step's own) would log every task_enqueued of a worker twice."""

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        task_logs.connect_worker_signals()


app.steps["worker"].add(TaskLogsStep)
task_log_signals.bind_extra_task_metadata.connect(observability.bind_task_correlation_id)

# Metrics: task outcomes, run time and step latency, kept in Redis for /metrics.
signals.before_task_publish.connect(metrics.stamp_published_at)
signals.task_prerun.connect(metrics.task_started)
signals.task_success.connect(metrics.task_succeeded)
signals.task_failure.connect(metrics.task_failed)
signals.task_retry.connect(metrics.task_retried)

# Tracing (OTEL_*) in the process that runs the tasks; error tracking (SENTRY_DSN).
signals.worker_init.connect(observability.start_worker_tracing)
signals.worker_process_init.connect(observability.start_worker_process_tracing)
signals.celeryd_init.connect(observability.start_worker_error_tracking)
signals.beat_init.connect(observability.start_worker_error_tracking)
