"""Settings, read strictly from the environment (see .env.example); nonsense fails at start."""

from __future__ import annotations

import os
import tempfile
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


DEBUG = _bool("DEBUG", False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

# Fernet keys for provider tokens at rest: first one encrypts, all decrypt (rotation).
# Unset, a key derived from SECRET_KEY is used.
ENCRYPTION_KEYS = env.list("ENCRYPTION_KEYS", default=[])

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
]

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

# Kept-alive connections per provider host and worker: as many as threads that may call it at once.
PROVIDER_POOL_SIZE = _positive_int("PROVIDER_POOL_SIZE", 512)

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

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "edits_api.errors.exception_handler",
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
