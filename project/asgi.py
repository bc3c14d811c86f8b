"""The ASGI application: what the web server serves (Procfile, docker-compose, `make run`).

Sync views stay sync (Django runs each on a thread for its request); the views that wait, `POST
/api/orders/?wait=N` and `GET /api/orders/<id>/stream/`, are async and wait on Redis pub/sub with
no thread and no database connection (orders/live.py). Served by uvicorn workers under gunicorn:
see the Procfile for why.
"""

import os

from django.core.asgi import get_asgi_application

from project import observability

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Under ASGI a request's ORM calls run on a thread that ends with the request, so a persistent
# connection (CONN_MAX_AGE) would never be reused, only left behind: PostgreSQL connections come
# from a pool instead (project/settings.py). The Celery workers keep CONN_MAX_AGE.
os.environ.setdefault("DATABASE_POOL", "1")

# As in project/wsgi.py: before the middleware chain is built; no-ops unless OTEL_* / SENTRY_DSN.
observability.configure_tracing(service="orderflow-web")
observability.configure_error_tracking()
application = get_asgi_application()
