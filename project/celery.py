import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("orderflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_database_connections(sender=None, **_kwargs) -> None:
    """What Django does around every request: drop a connection past CONN_MAX_AGE or broken.

    Celery's Django fixup would otherwise open a new connection for every task (a PostgreSQL
    backend fork each time); CELERY_DB_REUSE_MAX hands the decision to this handler.
    """
    from django.db import close_old_connections

    if not getattr(getattr(sender, "request", None), "is_eager", False):  # eager: caller's db
        close_old_connections()
