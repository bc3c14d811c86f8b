"""Orderflow settings: one module, read from the environment (and `.env` when present).

Every variable is documented with its default in `.env.example`.
"""

from datetime import timedelta
from email.utils import parseaddr
from ipaddress import ip_network
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    env.read_env(BASE_DIR / ".env")

INSECURE_DEFAULT_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=INSECURE_DEFAULT_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=True)
if not DEBUG and SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY:
    raise ImproperlyConfigured("DEBUG=0 needs a real SECRET_KEY (see .env.example).")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

if not DEBUG:
    # Production: HTTPS only. Behind a TLS-terminating proxy, set SECURE_PROXY_SSL_HEADER to
    # what it sends (e.g. X-Forwarded-Proto) so Django knows the request was secure.
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
    # The preload flag only takes effect once the domain is submitted to the browsers' list.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env.bool("BEHIND_TLS_PROXY", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # /healthz is probed and /metrics scraped over plain HTTP inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "servestatic",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc as pinned static files
    "django_celery_results",
    "django_celery_beat",
    "axes",
    "django_structlog",
    "django_prometheus",
    "orders",
    "orders.provider",
    "notifications",
]

MIDDLEWARE = [
    # HTTP metrics for /metrics: first and last, so that they time the whole chain.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # django-structlog's request lines, with the order's correlation id (project/observability.py)
    "project.observability.RequestMiddleware",
    "project.api_errors.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last: turns a login refused by the lockout into a 429 (axes' documented position), before
    # the metrics middleware sees the response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent workers: IMMEDIATE takes the write lock at BEGIN, so two writers queue on the
    # busy timeout instead of failing with "database is locked" when one upgrades its lock.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env.bool("DATABASE_POOL", default=False):
    # The ASGI web server (project/asgi.py turns this on): each request runs its ORM calls on a
    # thread of its own, so a persistent connection would never be reused; a pool is.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": 1,
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=8),
            # How long a request waits for a free connection before it fails (psycopg's 30 s).
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=30.0),
        }
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Login lockout (django-axes) ------------------------------------------------------------------
# Every login path goes through authenticate(): the token endpoint, /accounts/login/ and
# /admin/login/. Axes' backend refuses a locked-out client before the password is checked, and
# counts failures in the database: the lockout holds across processes and does not depend on
# Redis (a Redis outage, which opens the API throttles, leaves it in force).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Locked per address and, separately, per username (a guess spread over many addresses).
# No start-up banner: every management command would print it (a one-line error must stay one).
AXES_VERBOSE = False
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_LOCKOUT_MINUTES", default=15))
# A locked-out client's further attempts neither extend the lockout nor write a row each.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
# The same client address as every throttle (NUM_PROXIES below), not axes' own guess.
AXES_CLIENT_IP_CALLABLE = "project.throttling.client_address"
# Successful logins are not logged to a table that would only grow.
AXES_DISABLE_ACCESS_LOG = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
LOGIN_URL = "/accounts/login/"
# After login, the customer's orders (Django's default /accounts/profile/ does not exist).
LOGIN_REDIRECT_URL = "/orders/"

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="orders@orderflow.localhost")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON in, JSON out (the browsable API too while DEBUG is on).
    # JSON with a nesting limit: Python's parser recurses, a deep body would be a RecursionError.
    "DEFAULT_PARSER_CLASSES": ["project.parsers.DepthLimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "project.schema.OrderflowAutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    "EXCEPTION_HANDLER": "project.api_errors.exception_handler",
    # How many reverse proxies in front of the app append to X-Forwarded-For. 0: the client's
    # address is the TCP peer (REMOTE_ADDR) and the header is ignored, so a client cannot choose
    # its own address to reset a throttle; behind one proxy (nginx, a load balancer) set 1.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
    "DEFAULT_THROTTLE_RATES": {
        "order_create": env.str("ORDER_CREATE_THROTTLE_RATE", default="120/min"),
        "batch_create": env.str("BATCH_CREATE_THROTTLE_RATE", default="10/min"),
        "auth_token": env.str("AUTH_TOKEN_THROTTLE_RATE", default="20/min"),
        # Webhook endpoint registration and delivery replay, per user (each fans out requests).
        "webhook_create": env.str("WEBHOOK_CREATE_THROTTLE_RATE", default="10/min"),
        "webhook_replay": env.str("WEBHOOK_REPLAY_THROTTLE_RATE", default="60/min"),
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=2_621_440)
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=32)
# /healthz: answered per client address at most this often; the worker ping it reports is
# broadcast at most once per interval for the whole cluster and answered from the cache.
HEALTHZ_THROTTLE_RATE = env.str("HEALTHZ_THROTTLE_RATE", default="60/min")
HEALTHZ_WORKER_PING_INTERVAL = env.float("HEALTHZ_WORKER_PING_INTERVAL", default=10.0)
SPECTACULAR_SETTINGS = {
    "TITLE": "Orderflow API",
    "DESCRIPTION": "Accept orders at once; payment, cart check and confirmation run in Celery.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_NAME_OVERRIDES": {"OrderStatusEnum": "orders.models.OrderStatus.choices"},
    # Swagger UI and ReDoc from drf-spectacular-sidecar's pinned files, served as our own static
    # files: /api/docs/ works offline and runs no third-party script next to session auth.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Throttle counters and other shared state live in Redis, so limits hold across processes.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("CACHE_URL", default=""),
        "KEY_PREFIX": "orderflow",
    }
}

# --- The web edge (project/edge.py) --------------------------------------------------------------
# Threads per web process for the sync views (the views that wait need none). One is the fastest
# on a CPU-bound API (the GIL); a second lets a slow request (a 500-order batch, an admin page)
# not stall the process's other requests. bench/api.py --servers edge:1 edge:2 compares.
WEB_SYNC_THREADS = env.int("WEB_SYNC_THREADS", default=2)

# --- Live updates (orders/live.py): ?wait and the order's event stream ---------------------------
# Held waits and streams one user may have open at once (429 beyond); each holds a lease in Redis
# that expires unless renewed, so a crashed web process cannot keep its slots.
LIVE_MAX_HELD_PER_USER = env.int("LIVE_MAX_HELD_PER_USER", default=8)
LIVE_HELD_LEASE_SECONDS = env.int("LIVE_HELD_LEASE_SECONDS", default=60)
# A stream ends after this long (the client reconnects with Last-Event-ID); a comment every
# keep-alive interval keeps proxies from closing an idle stream.
LIVE_STREAM_MAX_SECONDS = env.int("LIVE_STREAM_MAX_SECONDS", default=300)
LIVE_KEEPALIVE_SECONDS = env.float("LIVE_KEEPALIVE_SECONDS", default=15.0)

# --- Celery -------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
REDIS_URL = env.str(
    "REDIS_URL",
    default=CELERY_BROKER_URL
    if CELERY_BROKER_URL.startswith("redis")
    else "redis://127.0.0.1:6379/0",
)
CACHES["default"]["LOCATION"] = CACHES["default"]["LOCATION"] or REDIS_URL
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_DEFAULT_QUEUE = "orders"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Keep database connections across tasks (CONN_MAX_AGE and health checks decide, as for
# requests: project/celery.py); Celery still recycles them every 2 x this many tasks.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=500)
# Below the visibility timeout: a task still running when it expires would be delivered twice.
# A step is a few quick queries and at most one provider call (10 s timeout, 2 s inline wait).
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=25)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=30)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A request must not hang on a broker that is down: give up quickly and let the outbox relay
# publish later (the order and its outbox row are already committed).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# Redis redelivers an unacked message after the visibility timeout; it must exceed the longest
# countdown a task can carry (retry backoff max, rate-limit re-schedules) or an ETA task would be
# delivered twice while it waits.
# kombu scans for abandoned messages every unacked_restore_interval x unacked_restore_throttle
# seconds (100 s by default); 5 s x 1 brings a killed worker's messages back within V + 5 s.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=120),
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
# The longest countdown or ETA any task may carry (project/retry.py caps every one): a message
# waiting on its ETA is held unacknowledged, so countdown + time limit must stay under the
# visibility timeout (checked when the Celery app loads).
CELERY_MAX_COUNTDOWN = env.int("CELERY_MAX_COUNTDOWN", default=60)
# The provider's calls have their own queue, a batch order's at a lower message priority than
# single orders' (the router reads orders/workflow.py). RabbitMQ queues are declared with
# priorities for that; Redis keeps one list per priority step and serves 0 first.
CELERY_TASK_QUEUE_MAX_PRIORITY = 10
CELERY_TASK_ROUTES = (
    "orders.workflow.route_task",
    {"notifications.*": {"queue": "notifications"}},
)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- The pipeline and the payment provider -----------------------------------------------------
PAYMENT_PROVIDER_URL = env.str("PAYMENT_PROVIDER_URL", default="http://127.0.0.1:8100")
PAYMENT_PROVIDER_API_KEY = env.str("PAYMENT_PROVIDER_API_KEY", default="sk_sandbox_orderflow")
PAYMENT_PROVIDER_RATE_LIMIT = env.str("PAYMENT_PROVIDER_RATE_LIMIT", default="2/s")
PAYMENT_PROVIDER_TIMEOUT = env.float("PAYMENT_PROVIDER_TIMEOUT", default=10.0)
# The cluster-wide limiter (project/ratelimit.py); off only to measure the baseline without it.
PAYMENT_PROVIDER_CLUSTER_RATE_LIMIT = env.bool("PAYMENT_PROVIDER_CLUSTER_RATE_LIMIT", default=True)
# Slack added to the provider's window against network jitter (costs margin/window throughput).
PAYMENT_PROVIDER_RATE_MARGIN = env.float("PAYMENT_PROVIDER_RATE_MARGIN", default=0.04)
# A provider call waits in place for a slot at most this long; further slots re-schedule the task.
PAYMENT_PROVIDER_MAX_INLINE_WAIT = env.float("PAYMENT_PROVIDER_MAX_INLINE_WAIT", default=2.0)
# Who gets the next slot: "fair" (an equal share per customer, singles before batches) or "fifo"
# (first come, first served: the algorithm before fair share, kept as a benchmark baseline).
PAYMENT_PROVIDER_LIMITER = env.str("PAYMENT_PROVIDER_LIMITER", default="fair")
if PAYMENT_PROVIDER_LIMITER not in ("fair", "fifo"):
    raise ImproperlyConfigured("PAYMENT_PROVIDER_LIMITER must be 'fair' or 'fifo'.")
# Fair share weights, "customer=weight,..." (the customer is the user id; default weight 1).
PAYMENT_PROVIDER_CUSTOMER_WEIGHTS = env.str("PAYMENT_PROVIDER_CUSTOMER_WEIGHTS", default="")
# Fair: a slot is booked at most this far ahead (a newcomer waits about this plus one pair).
PAYMENT_PROVIDER_FAIR_LOOKAHEAD = env.float("PAYMENT_PROVIDER_FAIR_LOOKAHEAD", default=0.4)
# Learn each request's network delay and widen the window by it (the margin stays the minimum).
PAYMENT_PROVIDER_RATE_ADAPTIVE = env.bool("PAYMENT_PROVIDER_RATE_ADAPTIVE", default=True)
PIPELINE_MAX_RETRIES = env.int("PIPELINE_MAX_RETRIES", default=5)
PIPELINE_RETRY_BACKOFF_BASE = env.float("PIPELINE_RETRY_BACKOFF_BASE", default=1.0)
PIPELINE_RETRY_BACKOFF_MAX = env.int("PIPELINE_RETRY_BACKOFF_MAX", default=30)
ORDER_MAX_LINES = env.int("ORDER_MAX_LINES", default=100)
BATCH_MAX_ORDERS = env.int("BATCH_MAX_ORDERS", default=500)
# Leases (orders/services/leases.py): a worker renews the lease of every order whose message it
# holds every WORKER_LEASE_HEARTBEAT_SECONDS; one that ran out for ORDER_LEASE_SECONDS is lost
# work, re-dispatched by the recovery sweep (every RECOVERY_SWEEP_SECONDS).
ORDER_LEASE_SECONDS = env.float("ORDER_LEASE_SECONDS", default=6.0)
WORKER_LEASE_HEARTBEAT_SECONDS = env.float("WORKER_LEASE_HEARTBEAT_SECONDS", default=1.5)
RECOVERY_SWEEP_SECONDS = env.float("RECOVERY_SWEEP_SECONDS", default=2.0)
# A message whose deliveries killed their worker this many times is dead-lettered and settled.
PIPELINE_MAX_DELIVERIES = env.int("PIPELINE_MAX_DELIVERIES", default=3)
# Non-terminal orders not updated for this long are reported as stuck (health and metrics).
STUCK_ORDER_SECONDS = env.int("STUCK_ORDER_SECONDS", default=120)
# Reconciliation with the provider (orders/services/reconciliation.py).
RECONCILE_PAYMENTS_SECONDS = env.float("RECONCILE_PAYMENTS_SECONDS", default=60.0)
# Pruning (beat, hourly): delivered outbox rows and task results older than this many days.
PRUNE_OUTBOX_AFTER_DAYS = env.int("PRUNE_OUTBOX_AFTER_DAYS", default=7)
PRUNE_TASK_RESULTS_AFTER_DAYS = env.int("PRUNE_TASK_RESULTS_AFTER_DAYS", default=7)
PRUNE_WEBHOOK_ATTEMPTS_AFTER_DAYS = env.int("PRUNE_WEBHOOK_ATTEMPTS_AFTER_DAYS", default=30)

# Flower can run any task: with DEBUG=0 there is no default, and `python -m project.flower`
# (the Procfile's and compose's command) refuses to start without a real user:password.
INSECURE_DEFAULT_FLOWER_BASIC_AUTH = "admin:orderflow"
FLOWER_BASIC_AUTH = env.str(
    "FLOWER_BASIC_AUTH", default=INSECURE_DEFAULT_FLOWER_BASIC_AUTH if DEBUG else ""
)

# --- Observability (project/observability.py, project/metrics.py; README "What an operator sees")
# Logs: django-structlog and structlog over the standard library; JSON lines with LOG_JSON=1.
# Django hands LOGGING to LOGGING_CONFIG, which also configures structlog.
LOG_JSON = env.bool("LOG_JSON", default=not DEBUG)
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING_CONFIG = "project.observability.configure_logging"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {"()": "project.observability.structured_formatter", "json": LOG_JSON}
    },
    "filters": {
        "routine_housekeeping": {"()": "project.observability.RoutineHousekeepingFilter"},
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "structured",
            "filters": ["routine_housekeeping"],
            # The process's own stderr: Celery swaps sys.stderr for a proxy that logs (and
            # would loop back here), and test runners swap and close theirs.
            "stream": "ext://sys.__stderr__",
        },
        # Errors of requests (django) and of tasks (django-structlog's task_failed) to ADMINS.
        "mail_admins": {
            "class": "project.observability.AdminEmailHandler",
            "level": "ERROR",
            "formatter": "structured",
            "filters": ["require_debug_false"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["mail_admins"], "level": LOG_LEVEL},
        "django_structlog.celery": {"handlers": ["mail_admins"], "level": LOG_LEVEL},
        # Celery's own per-task lines repeat django-structlog's (which carry the context).
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
    },
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# django-structlog's Celery receiver is connected in project/celery.py, not by its app's ready()
# (DJANGO_STRUCTLOG_CELERY_ENABLED stays off).
# Who is e-mailed about errors (mail_admins): "Name <address>, address, ...".
ADMINS = [
    (name or address, address)
    for name, address in map(parseaddr, env.list("ADMINS", default=[]))
    if "@" in address
]
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
# /metrics (project/metrics.py): every configured credential is required; none configured
# refuses every scrape. A bearer token, and/or the networks a scraper may come from.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = [
    str(ip_network(network, strict=False))  # a typo fails at start-up, not at the first scrape
    for network in env.list("METRICS_ALLOWED_NETWORKS", default=[])
]
# Where workers keep task counters and latency histograms for /metrics (in REDIS_URL).
METRICS_REDIS_PREFIX = env.str("METRICS_REDIS_PREFIX", default="orderflow:metrics")
# Tracing (OpenTelemetry, OTEL_* variables) and error tracking (SENTRY_DSN) are read by the
# process entry points, not here: project/wsgi.py and project/celery.py.

# --- Notifications and webhooks ---
# Webhook URLs must be http(s) and public (SSRF guard); True only for local receivers and tests.
WEBHOOKS_ALLOW_PRIVATE_URLS = env.bool("WEBHOOKS_ALLOW_PRIVATE_URLS", default=False)
# Every endpoint receives every event it subscribes to: the cap bounds one user's fan-out.
WEBHOOK_MAX_ENDPOINTS_PER_USER = env.int("WEBHOOK_MAX_ENDPOINTS_PER_USER", default=10)
WEBHOOK_CONNECT_TIMEOUT = env.float("WEBHOOK_CONNECT_TIMEOUT", default=3.0)
WEBHOOK_READ_TIMEOUT = env.float("WEBHOOK_READ_TIMEOUT", default=10.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
# Wait before attempt n+1: base x 2^(n-1) seconds, capped, with equal jitter (~2 h over 8 tries).
WEBHOOK_RETRY_BACKOFF_BASE = env.float("WEBHOOK_RETRY_BACKOFF_BASE", default=60.0)
WEBHOOK_RETRY_BACKOFF_MAX = env.float("WEBHOOK_RETRY_BACKOFF_MAX", default=21600.0)
# A 429's Retry-After is honoured, up to this many seconds.
WEBHOOK_RETRY_AFTER_MAX = env.float("WEBHOOK_RETRY_AFTER_MAX", default=3600.0)
# Per endpoint across all workers (project.ratelimit.SlidingWindowLimiter); empty: no limit.
WEBHOOK_RATE_LIMIT = env.str("WEBHOOK_RATE_LIMIT", default="10/s")
# A slot this close is waited for in place; a later one re-schedules the delivery task.
WEBHOOK_RATE_LIMIT_MAX_INLINE_WAIT = env.float("WEBHOOK_RATE_LIMIT_MAX_INLINE_WAIT", default=1.0)
# A pending delivery overdue this long (its message lost, the broker was down) is re-published.
WEBHOOK_SWEEP_OVERDUE_SECONDS = env.int("WEBHOOK_SWEEP_OVERDUE_SECONDS", default=300)

# --- Beat: the one schedule ----------------------------------------------------------------------
CELERY_BEAT_SCHEDULE = {
    "relay-outbox": {"task": "orders.relay_outbox", "schedule": 5.0},
    "recover-orders": {"task": "orders.recover_orders", "schedule": RECOVERY_SWEEP_SECONDS},
    "reconcile-payments": {
        "task": "orders.reconcile_payments",
        "schedule": RECONCILE_PAYMENTS_SECONDS,
    },
    "prune-tables": {"task": "orders.prune_tables", "schedule": 3600.0},
    "prune-webhook-attempts": {"task": "notifications.prune_webhook_attempts", "schedule": 3600.0},
    "sweep-webhook-deliveries": {
        "task": "notifications.sweep_webhook_deliveries",
        "schedule": 60.0,
    },
}
