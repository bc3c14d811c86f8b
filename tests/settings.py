"""Settings for the suite: the product's settings, isolated per test run.

The suite's two connection variables are read here and nowhere else: ``TEST_REDIS_URL`` (the
Redis for the limiter, live updates, locks and the cache; default DB 15) and
``TEST_CELERY_BROKER_URL`` (the broker; default the same Redis). Tests and the processes they
start read them through these settings (``REDIS_URL``, ``CELERY_BROKER_URL``).

Each run gets its own id, so two runs at once (a developer and CI, or pytest sessions side by
side) never share a test database, a broker message or a rate-limit budget: the id prefixes every
broker key (kombu's global_keyprefix) and the cache, names the test database and the provider API
key. Files the run makes (the SQLite test database and its -wal/-shm, STATIC_ROOT) live in one
temporary directory outside the checkout, removed when the process that made it exits. Worker
processes started by the suite inherit the id and the directory through the environment.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

RUN_ID = os.environ.setdefault("ORDERFLOW_TEST_RUN_ID", f"{os.getpid()}")
if "ORDERFLOW_TEST_TMP" not in os.environ:
    os.environ["ORDERFLOW_TEST_TMP"] = tempfile.mkdtemp(prefix="orderflow-test-")
    atexit.register(shutil.rmtree, os.environ["ORDERFLOW_TEST_TMP"], ignore_errors=True)
RUN_DIR = Path(os.environ["ORDERFLOW_TEST_TMP"])

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"
TEST_CELERY_BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL") or TEST_REDIS_URL
# Environment, not just settings: the product's settings derive from these, and so do the
# processes the suite starts. A developer's .env or shell never points the suite elsewhere.
os.environ["CELERY_BROKER_URL"] = TEST_CELERY_BROKER_URL
os.environ["REDIS_URL"] = TEST_REDIS_URL
os.environ["CACHE_URL"] = TEST_REDIS_URL
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
    DATABASES["default"]["TEST"] = {"NAME": str(RUN_DIR / f"db-{RUN_ID}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_orderflow_{RUN_ID}"}
    # Worker threads outlive their tests; persistent connections would keep the test database
    # busy when pytest-django drops it.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
# WhiteNoise warns about a missing STATIC_ROOT on every request otherwise.
STATIC_ROOT = RUN_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# On RabbitMQ the worker's event loop only wakes for timers: a short AMQP heartbeat lets a
# stopping test worker notice within a second or two instead of ten.
CELERY_BROKER_HEARTBEAT = 2
