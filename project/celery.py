"""The Celery app, and every project-level Celery signal handler, connected here.

(The orders app connects its own outbox hooks in orders/signals.py.)
"""

import os

from celery import Celery, bootsteps, signals
from django.db import close_old_connections
from django_structlog.celery import signals as task_log_signals
from django_structlog.celery.receivers import CeleryReceiver

from project import metrics, observability

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("orderflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


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
