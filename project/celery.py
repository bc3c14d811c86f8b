"""The Celery app (the cookiecutter-django recipe): settings from the CELERY_ namespace, tasks
autodiscovered, and the project-level worker wiring connected here."""

import os

from celery import Celery, signals
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections

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


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_database_connections(sender=None, **_kwargs) -> None:
    """What Django does around every request: drop a connection past CONN_MAX_AGE or broken.

    Celery's Django fixup would otherwise open a new connection for every task (a PostgreSQL
    backend fork each time); CELERY_DB_REUSE_MAX hands the decision to this handler.
    """
    if not getattr(getattr(sender, "request", None), "is_eager", False):  # eager: caller's db
        close_old_connections()
