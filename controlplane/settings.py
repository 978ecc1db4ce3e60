"""Sluice settings, read from the environment (see `.env.example` for every variable).

Two ways to run, same code:
- embedded (default): SQLite in WAL mode, django-q2 on the ORM broker, in-memory channel layer,
  database cache. Nothing else to install.
- scale-out: `DATABASE_URL` points at PostgreSQL; `REDIS_URL` moves the broker, the channel layer
  and the cache to Redis.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from controlplane.env import envbool, envchoice, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent

SLUICE_ENV = envchoice("SLUICE_ENV", "development", ("development", "production"))
PRODUCTION = SLUICE_ENV == "production"

DEBUG = envbool("DEBUG", default=not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when SLUICE_ENV=production")

_DEV_SECRET_KEY = "sluice-development-only-key-never-use-this-in-production-0123456789"  # noqa: S105 -- development only; production refuses it
SECRET_KEY = envstr("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when SLUICE_ENV=production: set it to a random string of "
            "at least 50 characters (python -c 'import secrets; print(secrets.token_urlsafe(64))')"
        )
    SECRET_KEY = _DEV_SECRET_KEY
elif PRODUCTION and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5):
    raise ImproperlyConfigured(
        "SECRET_KEY must be at least 50 characters with at least 5 different ones in production"
    )

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required when SLUICE_ENV=production")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

DATA_DIR = Path(envstr("SLUICE_DATA_DIR", str(BASE_DIR / "var"))).resolve()

# True inside `manage.py qcluster`: django-q2 forks its workers, which breaks pooled connections
# (django-q2 issue #209), so workers keep persistent connections instead of a pool.
RUNNING_QCLUSTER = len(sys.argv) > 1 and sys.argv[1] == "qcluster"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "django_q",
    "ninja",
    "controlplane",
    "pipelines",
    "review",
    "controlplane.monitoring",
    "controlplane.reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "controlplane.middleware.BodySizeLimitMiddleware",
    "controlplane.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "controlplane.context_processors.navigation",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

DATABASE_URL = envstr("DATABASE_URL")
if DATABASE_URL:
    try:
        _db = dj_database_url.parse(DATABASE_URL)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
    if _db["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            "DATABASE_URL must be a PostgreSQL URL (postgres://user:pass@host:5432/name); "
            "leave it unset for the embedded SQLite database"
        )
    # The psycopg pool serves web processes; workers keep one persistent connection each.
    if envbool("SLUICE_DB_POOL", default=not RUNNING_QCLUSTER):
        _db["CONN_MAX_AGE"] = 0
        _db["OPTIONS"] = {
            "pool": {
                "min_size": envint("SLUICE_DB_POOL_MIN", 1, minimum=0),
                "max_size": envint("SLUICE_DB_POOL_MAX", 10, minimum=1),
                "timeout": 10,
            }
        }
    else:
        _db["CONN_MAX_AGE"] = envint("CONN_MAX_AGE", 300, minimum=0)
        _db["CONN_HEALTH_CHECKS"] = True
    DATABASES = {"default": _db}
else:
    _sqlite_path = Path(envstr("SQLITE_PATH", str(DATA_DIR / "sluice.sqlite3")))
    _sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _sqlite_path,
            # A web process and a worker cluster write to the same file: WAL lets readers and one
            # writer work at once, IMMEDIATE takes the write lock up front (no upgrade deadlocks),
            # and the timeout waits for the lock instead of failing with "database is locked".
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": (
                    "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA busy_timeout=20000;"
                ),
            },
            "CONN_MAX_AGE": envint("CONN_MAX_AGE", 300, minimum=0),
            "TEST": {"NAME": DATA_DIR / "test.sqlite3"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, channel layer, cache ----------------------------------------------------

REDIS_URL = envstr("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "sluice",
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # The asyncio pool's default of 100 connections closes sockets under 100+ viewers.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "max_connections": 1000}]},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "sluice_cache",
            # Culling at the default 300 entries would drop live breaker and rate-limit state.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- django-q2 ------------------------------------------------------------------------------
# Configured deliberately (DESIGN.md, measured facts): successes are not stored, failing tasks are
# not re-presented forever, and Sluice's own retry policy owns item retries.
Q_CLUSTER = {
    "name": "sluice",
    "workers": envint("SLUICE_Q_WORKERS", 2, minimum=1, maximum=64),
    "recycle": 5000,
    "timeout": envint("SLUICE_Q_TIMEOUT", 300, minimum=10),
    "retry": envint("SLUICE_Q_TIMEOUT", 300, minimum=10) + 60,
    "max_attempts": 3,
    "ack_failures": True,
    "save_limit": -1,
    "bulk": 10,
    # A cluster takes a task from the broker only when it can soon start it. Engine drains run
    # until the queue is empty: one prefetched by a busy host would wait there while another
    # worker host sits idle (django-q2's default holds workers² tasks per cluster).
    "queue_limit": 1,
    "catch_up": False,
    "label": "Task queue",
    "log_level": "INFO" if DEBUG else "WARNING",
}
# How long a worker holds the items it claimed: longer than any provider timeout (at most 600 s),
# so a live worker keeps its lease; a dead worker's items run again once it passes.
SLUICE_LEASE_SECONDS = envint("SLUICE_LEASE_SECONDS", 900, minimum=2)
# How long a worker holds the deliveries it is sending: longer than a batch of them can take
# (ceil(200 / 16) rounds of the 10 s webhook timeout, 130 s). A dead worker's deliveries are
# sent again once it passes; a lease shorter than a slow batch would send some twice.
SLUICE_DELIVERY_LEASE_SECONDS = envint("SLUICE_DELIVERY_LEASE_SECONDS", 300, minimum=5)
# Drains started by one wake-up: one per worker process of a cluster by default; with several
# worker hosts, set it to the number of worker processes of all of them.
SLUICE_ENGINE_DRAINS = envint("SLUICE_ENGINE_DRAINS", Q_CLUSTER["workers"], minimum=1, maximum=256)
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 0.2

# --- Auth -----------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Failed logins per username and per address before the login form refuses for a while.
LOGIN_THROTTLE_ATTEMPTS = envint("LOGIN_THROTTLE_ATTEMPTS", 5, minimum=1)
LOGIN_THROTTLE_WINDOW = envint("LOGIN_THROTTLE_WINDOW", 900, minimum=1)

# --- Security -------------------------------------------------------------------------------

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    # plotly.js sets style attributes on the SVG it draws; scripts stay strict.
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("SLUICE_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
# Any request, file uploads included, is refused above this before its body is read.
SLUICE_MAX_UPLOAD_BYTES = envint("SLUICE_MAX_UPLOAD_BYTES", 55 * 1024 * 1024, minimum=1024)

if PRODUCTION:
    # Behind a TLS-terminating proxy set SECURE_PROXY_SSL_HEADER via SLUICE_BEHIND_PROXY.
    if envbool("SLUICE_BEHIND_PROXY", default=True):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", default=True)
    # Probes and Prometheus reach the pods over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", default=True)

# --- Internationalisation, static files ----------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = envstr("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Outside production, serve straight from static/ without collectstatic.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG

# --- Email ----------------------------------------------------------------------------------

_EMAIL_BACKEND = envstr(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
_email_options: dict = {}
if _EMAIL_BACKEND.endswith("smtp.EmailBackend"):
    _email_options = {
        "host": envstr("EMAIL_HOST", "localhost"),
        "port": envint("EMAIL_PORT", 25, minimum=1, maximum=65535),
        "username": envstr("EMAIL_HOST_USER"),
        "password": envstr("EMAIL_HOST_PASSWORD"),
        "use_tls": envbool("EMAIL_USE_TLS", default=False),
        "timeout": 20,
    }
MAILERS = {"default": {"BACKEND": _EMAIL_BACKEND, "OPTIONS": _email_options}}
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "sluice@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Logging --------------------------------------------------------------------------------

LOG_LEVEL = envchoice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
# json: one JSON object per line with the item, pipeline, step and attempt ids of the work a
# record is about (controlplane/logs.py); text: the same ids appended as key=value.
LOG_FORMAT = envchoice("SLUICE_LOG_FORMAT", "json" if PRODUCTION else "text", ("text", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "controlplane.logs.LogContextFilter"}},
    "formatters": {
        "text": {"()": "controlplane.logs.TextFormatter"},
        "json": {"()": "controlplane.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # django-q2 logs two INFO lines per task; keep them out of production logs.
        "django-q": {"level": "INFO" if DEBUG else "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}

# --- Monitoring -----------------------------------------------------------------------------

# /metrics answers scrapes that send `Authorization: Bearer <this>`; unset, it does not exist.
SLUICE_METRICS_TOKEN = envstr("SLUICE_METRICS_TOKEN")
if SLUICE_METRICS_TOKEN and len(SLUICE_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("SLUICE_METRICS_TOKEN must be at least 16 characters")
# Alert rules that POST to a webhook and name none use this (Slack-compatible incoming webhook).
SLUICE_ALERT_WEBHOOK_URL = envstr("SLUICE_ALERT_WEBHOOK_URL")
# Where people reach Sluice (https://sluice.example.com), for links in alert emails.
SLUICE_BASE_URL = envstr("SLUICE_BASE_URL").rstrip("/")
