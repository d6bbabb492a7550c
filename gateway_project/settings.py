"""Settings, read strictly from the environment (see .env.example); nonsense fails at start."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from edits_api.observability import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _bool(name: str, default: bool) -> bool:
    raw = env.str(name, default=str(default)).strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def _positive_int(name: str, default: int) -> int:
    raw = env.str(name, default=str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be positive, not {value}")
    return value


def _non_negative_int(name: str, default: int) -> int:
    raw = env.str(name, default=str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise ImproperlyConfigured(f"{name} must not be negative, not {value}")
    return value


def _refuse_weak_secret(name: str, value: str) -> None:
    """Django's `check --deploy` only warns (security.W009); a weak key must not start at all.

    The thresholds are Django's own: 50 characters, 5 distinct ones, no 'django-insecure-' prefix.
    """
    if len(value) < 50 or len(set(value)) < 5 or value.startswith("django-insecure-"):
        raise ImproperlyConfigured(
            f"{name} is too weak for DEBUG off: use at least 50 random characters, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )


DEBUG = _bool("DEBUG", False)

SECRET_KEY = env.str("SECRET_KEY", default="")
# Former keys, still accepted for sessions and image URLs while SECRET_KEY is being rotated.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"
elif not DEBUG:
    _refuse_weak_secret("SECRET_KEY", SECRET_KEY)
    for _fallback in SECRET_KEY_FALLBACKS:
        _refuse_weak_secret("SECRET_KEY_FALLBACKS", _fallback)

# Fernet keys for provider tokens at rest: first one encrypts, all decrypt (rotation).
# Unset, a key derived from SECRET_KEY is used.
ENCRYPTION_KEYS = env.list("ENCRYPTION_KEYS", default=[])

# HTTPS. All off by default, so `make run` works on http://127.0.0.1; behind TLS, set the ones
# the README's "Security" section lists and `manage.py check --deploy` reports nothing.
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", False)
# Probes and scrapers inside the network often speak plain http; they are never redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = _bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = _non_negative_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", False)
# Behind a TLS-terminating load balancer: the header it sets on https requests, e.g.
# "X-Forwarded-Proto" (value https) or "X-Forwarded-Ssl=on". Only when the balancer always sets
# or strips it: a client could otherwise claim https. Signed image URLs are then https://.
_proxy_header, _, _proxy_value = env.str("SECURE_PROXY_SSL_HEADER", default="").partition("=")
if _proxy_header.strip():
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _proxy_header.strip().upper().replace("-", "_"),
        _proxy_value.strip() or "https",
    )
# Take the host (for signed image URLs and route matching) from X-Forwarded-Host, set by the balancer.
USE_X_FORWARDED_HOST = _bool("USE_X_FORWARDED_HOST", False)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

try:
    DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
except (environ.ImproperlyConfigured, ValueError) as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Hundreds of threads per worker hold provider calls open; they share a few connections
    # instead of each keeping its own (PostgreSQL allows 100 by default).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": _positive_int("DB_POOL_SIZE", 10),
        # A request that needs the database while it is down gets its 503 after this many seconds.
        "timeout": 3,
    }
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Two workers write one file (`make run`): a transaction takes the write lock when it begins,
    # waiting for it (the busy timeout), instead of failing at once with "database is locked"
    # when its first read has to turn into a write while the other worker writes.
    DATABASES["default"].setdefault("OPTIONS", {})["transaction_mode"] = "IMMEDIATE"
    # Write-ahead log: readers no longer wait while a writer commits, and a commit syncs one file
    # once instead of the rollback journal's four syncs (a request that read while the ledger
    # committed stalled every request of its worker). Durability is unchanged (synchronous=FULL).
    DATABASES["default"]["OPTIONS"].setdefault("init_command", "PRAGMA journal_mode=WAL")
    # A file, not memory, so a gunicorn started by a test sees the test database; one per run.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"gateway-test-{os.getpid()}.sqlite3")}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix://, not {REDIS_URL!r}")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served from here rather than a CDN
    "axes",  # admin login throttling
    "entities",
    "edits_api",
]

MIDDLEWARE = [
    "edits_api.observability.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "edits_api.errors.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "edits_api.auth.ConcealRouteOnUnauthorized",
    # Last, as django-axes requires: it turns a locked-out login into its answer.
    "axes.middleware.AxesMiddleware",
]
# The image endpoints' chain (gateway_project/wsgi.py): without what only the admin and browsers
# need (static files, sessions, CSRF, users, messages, login lockouts), 6% of an edit's CPU. Nor
# CommonMiddleware: its slash and www redirects and user-agent refusals are for pages, and the
# Content-Length it adds the image views set themselves (edits_api/views.py).
IMAGES_API_MIDDLEWARE = [
    name
    for name in MIDDLEWARE
    if name.rsplit(".", 1)[-1]
    not in {
        "WhiteNoiseMiddleware",
        "SessionMiddleware",
        "CommonMiddleware",
        "CsrfViewMiddleware",
        "AuthenticationMiddleware",
        "MessageMiddleware",
        "AxesMiddleware",
    }
]

# Admin login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one user
# name from one address, that pair is locked for AXES_COOLOFF_MINUTES; failures are kept in the
# database, so every worker and instance counts them together.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = _bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = _positive_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=_positive_int("AXES_COOLOFF_MINUTES", 15))
# What identifies who is locked out, together. The default locks one user name at one address, so
# behind a load balancer (one address for all) a guesser cannot lock out every operator at once.
AXES_LOCKOUT_PARAMETERS = [env.list("AXES_LOCKOUT_PARAMETERS", default=["username", "ip_address"])]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "edits_api.errors.login_locked_out"
AXES_VERBOSE = False  # one log line per lockout is enough; axes would log its whole configuration

# Django's own error pages in the OpenAI envelope too (400 and 403 in urls.py).
CSRF_FAILURE_VIEW = "edits_api.errors.csrf_failure"

# Flash messages (an API key's secret is shown once that way) stay server-side, not in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "gateway_project.urls"
WSGI_APPLICATION = "gateway_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]  # the site's own files (favicon), next to templates/
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "media")))
# Where response_format=url images are kept. Several instances need one shared store, e.g.
# MEDIA_STORAGE_BACKEND=storages.backends.s3.S3Storage with django-storages installed.
STORAGES = {
    "default": {
        "BACKEND": env.str("MEDIA_STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage"),
        "OPTIONS": env.json("MEDIA_STORAGE_OPTIONS", default={}),
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Uploads above this many bytes spool to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = _positive_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 256 * 1024)
# The route's max_size_upload bounds the whole body; Django's own cap on non-file fields stays.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200
DATA_UPLOAD_MAX_NUMBER_FILES = 32

# How long a worker serves routes and entities from its in-process snapshot before re-reading.
ROUTE_CACHE_SECONDS = env.float("ROUTE_CACHE_SECONDS", default=1.0)

# Requests of one process that run Python at once (edits_api/turns.py); the others wait for a turn,
# given route by route in rotation, so a crowd on one route does not slow the rest. One is what the
# interpreter runs anyway; every wait (client, provider, Redis, storage, sleeps) gives it back.
TURNS_PER_PROCESS = _positive_int("TURNS_PER_PROCESS", 1)

# Kept-alive connections per provider host and worker: as many as threads that may call it at once.
PROVIDER_POOL_SIZE = _positive_int("PROVIDER_POOL_SIZE", 2048)

# The usage ledger (edits_api/accounting/ledger.py): rows are written in batches by a thread per
# process this often (0: during each request); the in-memory buffer holds this many rows, a caller
# waits this long for room, then rows go to the append-only journal in LEDGER_JOURNAL_DIR, which is
# replayed once the database answers (tried at most every LEDGER_REPLAY_SECONDS).
LEDGER_FLUSH_SECONDS = env.float("LEDGER_FLUSH_SECONDS", default=0.5)
LEDGER_BUFFER_SIZE = _positive_int("LEDGER_BUFFER_SIZE", 10_000)
LEDGER_BLOCK_SECONDS = env.float("LEDGER_BLOCK_SECONDS", default=0.25)
LEDGER_JOURNAL_DIR = Path(env.str("LEDGER_JOURNAL_DIR", default=str(BASE_DIR / "var" / "ledger-journal")))
LEDGER_REPLAY_SECONDS = env.float("LEDGER_REPLAY_SECONDS", default=5.0)

# Rate limits per key: with Redis unreachable (or the database, without Redis), admit requests
# unlimited (true) or refuse them with 503 (false, the default). Redis keys start with the prefix.
RATE_LIMIT_FAIL_OPEN = _bool("RATE_LIMIT_FAIL_OPEN", False)
RATE_LIMIT_PREFIX = env.str("RATE_LIMIT_PREFIX", default="gw:rl:")

# Circuit breaker per image model (README, "When providers fail"): it opens when, within a window
# that starts at a failure, at least BREAKER_MIN_REQUESTS distinct requests were answered and at
# least BREAKER_FAILURE_RATE of them failed; it stays open BREAKER_COOLDOWN_SECONDS, then one trial.
BREAKER_MIN_REQUESTS = _positive_int("BREAKER_MIN_REQUESTS", 10)
BREAKER_FAILURE_RATE = env.float("BREAKER_FAILURE_RATE", default=0.5)
if not 0 < BREAKER_FAILURE_RATE <= 1:
    raise ImproperlyConfigured(f"BREAKER_FAILURE_RATE must be above 0 and at most 1, not {BREAKER_FAILURE_RATE}")
BREAKER_WINDOW_SECONDS = _positive_int("BREAKER_WINDOW_SECONDS", 60)
BREAKER_COOLDOWN_SECONDS = _positive_int("BREAKER_COOLDOWN_SECONDS", 30)

# Lifetime of the signed image URLs the gateway hands out for response_format=url.
SIGNED_URL_MAX_AGE = _positive_int("SIGNED_URL_MAX_AGE", 3600)

# GET /readyz: how long the read of a gateway table may take before the answer is 503.
READYZ_TIMEOUT_SECONDS = env.float("READYZ_TIMEOUT_SECONDS", default=2.0)

# GET /metrics: open by default; a bearer token and/or the addresses (IPs or CIDR networks) that may read it.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
for _network in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS: {_network!r} is not an IP address or network") from None

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "edits_api.errors.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "gateway_project.negotiation.FirstRendererNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# GET /openapi.json and /docs: only the public image API, at /v1/... (each route adds its prefix).
SPECTACULAR_SETTINGS = {
    "TITLE": "AI image gateway",
    "DESCRIPTION": "OpenAI-compatible image API in front of several providers. Every /v1/images path below is "
    "served under each route's prefix, on the route's hosts.",
    "TAGS": [
        {
            "name": "Admin API",
            "description": "Image models, routes and API keys in the entity JSON form, for infrastructure as "
            "code. Served at /api/v1/... on any host (not under a route's prefix); needs "
            "`Authorization: Bearer <admin token>` (`python manage.py create_admin_token NAME`).",
        }
    ],
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,  # file fields as binary in requests
    "PREPROCESSING_HOOKS": ["edits_api.schema.public_image_endpoints"],
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
            # The admin REST API's (entities/api): a token from `manage.py create_admin_token NAME`.
            "adminToken": {"type": "http", "scheme": "bearer", "description": "An admin token (create_admin_token)."},
        }
    },
    "SECURITY": [{"bearer": []}, {"apiKey": []}, {}],  # {}: routes that no API key names are open
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Every line names its request (X-Request-Id); LOG_FORMAT=json writes one JSON object per line.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING = logging_config(level=env.str("LOG_LEVEL", default="INFO"), json_format=LOG_FORMAT == "json")
