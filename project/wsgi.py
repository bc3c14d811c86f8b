import os

from django.core.wsgi import get_wsgi_application

from project import observability

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Before the application builds its middleware chain (tracing adds its own); both are no-ops
# unless OTEL_* / SENTRY_DSN ask for them.
observability.configure_tracing(service="orderflow-web")
observability.configure_error_tracking()
application = get_wsgi_application()

# Static files in front, as project/edge.py does for the ASGI server (no static middleware).
from django.conf import settings  # noqa: E402
from servestatic import ServeStatic  # noqa: E402

application = ServeStatic(
    application,
    root=settings.STATIC_ROOT,
    prefix=f"/{settings.STATIC_URL.strip('/')}/",
    autorefresh=settings.DEBUG,
    max_age=0 if settings.DEBUG else 60,
)
