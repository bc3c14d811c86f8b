import os

from django.core.wsgi import get_wsgi_application

from project import observability

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Before the application builds its middleware chain (tracing adds its own); both are no-ops
# unless OTEL_* / SENTRY_DSN ask for them.
observability.configure_tracing(service="orderflow-web")
observability.configure_error_tracking()
application = get_wsgi_application()
