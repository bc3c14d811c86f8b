"""Settings for the suite: the product's settings, isolated per test run.

The suite talks to the real Redis (DB 15) and the real database. Each run gets its own id, so
two runs at once (a developer and CI, or pytest sessions side by side) never share a test
database, a broker message or a rate-limit budget: the id prefixes every broker key
(kombu's global_keyprefix), names the test database and the provider API key. Worker processes
started by the suite inherit the id through the environment.
"""

import os

RUN_ID = os.environ.setdefault("ORDERFLOW_TEST_RUN_ID", f"{os.getpid()}")

os.environ["CELERY_BROKER_URL"] = os.environ.get(
    "TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"
)
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("PIPELINE_RETRY_BACKOFF_BASE", "0.2")
os.environ.setdefault("PIPELINE_RETRY_BACKOFF_MAX", "2")
# Throttling has its own test; elsewhere the suite posts as fast as it likes.
os.environ.setdefault("ORDER_CREATE_THROTTLE_RATE", "100000/min")
os.environ.setdefault("BATCH_CREATE_THROTTLE_RATE", "100000/min")
os.environ.setdefault("AUTH_TOKEN_THROTTLE_RATE", "100000/min")
os.environ.setdefault("WEBHOOK_CREATE_THROTTLE_RATE", "100000/min")
os.environ.setdefault("WEBHOOK_REPLAY_THROTTLE_RATE", "100000/min")

from project.settings import *  # noqa: E402, F403
from project.settings import (  # noqa: E402
    BASE_DIR,
    CACHES,
    CELERY_BROKER_TRANSPORT_OPTIONS,
    DATABASES,
)

BROKER_KEY_PREFIX = f"test-{RUN_ID}:"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "global_keyprefix": BROKER_KEY_PREFIX,
}
PAYMENT_PROVIDER_API_KEY = f"sk_test_{RUN_ID}"
CACHES["default"]["KEY_PREFIX"] = f"test-{RUN_ID}"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory: worker threads and worker processes must see the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".pytest-db-{RUN_ID}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_orderflow_{RUN_ID}"}
    # Worker threads outlive their tests; persistent connections would keep the test database
    # busy when pytest-django drops it.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
# WhiteNoise warns about a missing STATIC_ROOT on every request otherwise.
(BASE_DIR / "staticfiles").mkdir(exist_ok=True)
# On RabbitMQ the worker's event loop only wakes for timers: a short AMQP heartbeat lets a
# stopping test worker notice within a second or two instead of ten.
CELERY_BROKER_HEARTBEAT = 2
