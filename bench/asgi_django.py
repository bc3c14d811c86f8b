"""bench/api.py's `asgi-django` server: Django's ASGI handler serving every view, sync ones
included (what project/asgi.py served before project/edge.py). Benchmarks only."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DATABASE_POOL", "1")
application = get_asgi_application()
