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
from servestatic import ServeStatic  # noqa: E402

from project import edge  # noqa: E402  (reads the settings)

application = ServeStatic(application, **edge.static_files())
