"""The ASGI application: what the web server serves (Procfile, docker-compose, `make run`).

project/edge.py decides per request: the views that wait, `POST /api/orders/?wait=N` and `GET
/api/orders/<id>/stream/`, are async on Django's ASGI handler and wait on Redis pub/sub with no
thread and no database connection (orders/live.py); every sync view runs on Django's WSGI handler
in a small thread pool; static files are served in front of both. Served by uvicorn workers
under gunicorn: see the Procfile for why.
"""

import os

import django

from project import observability

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# A held request's ORM calls run on a thread that ends with the request, so a persistent
# connection (CONN_MAX_AGE) would never be reused, only left behind: PostgreSQL connections come
# from a pool instead (project/settings.py). The Celery workers keep CONN_MAX_AGE.
os.environ.setdefault("DATABASE_POOL", "1")

# As in project/wsgi.py: before the middleware chain is built; no-ops unless OTEL_* / SENTRY_DSN.
observability.configure_tracing(service="orderflow-web")
observability.configure_error_tracking()
django.setup(set_prefix=False)  # as get_asgi_application(): the handlers set the script prefix

from project import edge  # noqa: E402  (needs the apps loaded)

application = edge.application()
