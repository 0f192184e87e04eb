"""unitscope settings.

Every setting is read from the environment through the typed helpers below, with defaults that make a
fresh clone run on its own: SQLite, media on the local disk, Celery in-process. Production sets
`DEBUG=0` (the default), `SECRET_KEY`, `ALLOWED_HOSTS`, `DATABASE_URL` and, for S3 media, `S3_BUCKET`.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"environment variable {name}={value!r} is not a boolean (use 1/0, true/false)")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envrate(name: str, default: str) -> str:
    """A django-ratelimit rate such as 30/m (30 a minute)."""
    value = env(name, default)
    if not re.fullmatch(r"[1-9]\d*/\d*[smhd]", value):
        raise ValueError(f"environment variable {name}={value!r} is not a rate such as 30/m")
    return value


DEBUG = envbool("DEBUG", False)
# The embedded key says it is insecure (so `check --deploy` flags it) and serves DEBUG only: production
# (DEBUG off) refuses to start without a SECRET_KEY of its own rather than sign cookies with a public key.
SECRET_KEY = env("SECRET_KEY") or ("django-insecure-development-key-for-DEBUG-only" if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. With DEBUG off unitscope needs a secret key of its own: set SECRET_KEY to "
        "a long random string (e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'), or "
        "DEBUG=1 for local development."
    )
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    # The REST API (/api/); listed so its docs page serves Swagger UI from our static files, not a CDN.
    "ninja",
    "runs",
    "annotate",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout during login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates", *sorted((BASE_DIR / "annotate" / "providers").glob("*/templates"))],
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

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'unitscope.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (gunicorn's workers, `make serve`) write to one file: a transaction takes the write
    # lock when it begins (IMMEDIATE), so a writer waits up to `timeout` seconds for another instead of
    # failing with "database is locked" when its read would have to become a write.
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=20, transaction_mode="IMMEDIATE")
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache backs the crowd's throttles (crowd worker creation, slot taking): shared by every web process in
# production (CACHE_URL=redis://...), in this process by default. Login attempts are counted in the database.
CACHE_URL = env("CACHE_URL")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "unitscope"}
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "annotate:dashboard"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username from one
# address, that pair is locked out for AXES_COOLOFF_HOURS. Attempts are rows in the database (shown in the
# admin), so every web process counts the same ones. Axes' backend comes first: it refuses a locked-out
# pair before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(hours=envint("AXES_COOLOFF_HOURS", 1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "config.client_ip.client_ip"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
# Media are private: runs' media view serves /media/<key> to the members of the key's project only, so the
# URL is fixed (FieldFile.url of local media must reach that view).
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(BASE_DIR / "media")))

# The bucket must not be public: pages link tiles with signed URLs that expire (S3_SIGNED_URLS, on by
# default), and reports come through the media view.
S3_BUCKET = env("S3_BUCKET")
if S3_BUCKET:
    _media_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env("S3_ENDPOINT_URL") or None,
            "region_name": env("S3_REGION") or None,
            "location": env("S3_PREFIX", "media"),
            "querystring_auth": envbool("S3_SIGNED_URLS", True),
            "file_overwrite": False,
        },
    }
else:
    _media_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Security: safe by default, relaxed only when DEBUG is on or for the plain-HTTP local demo.
SECURE_SSL = envbool("SECURE_SSL", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_SSL
CSRF_COOKIE_SECURE = SECURE_SSL
SECURE_SSL_REDIRECT = SECURE_SSL
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000 if SECURE_SSL else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_SSL
SECURE_HSTS_PRELOAD = SECURE_SSL
BEHIND_PROXY = envbool("BEHIND_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
# Behind BEHIND_PROXY the client's address is the one the outermost of PROXY_COUNT proxies saw: the entry
# that many places from the right of X-Forwarded-For (the entries left of it are the client's to forge).
PROXY_COUNT = envint("PROXY_COUNT", 1) if BEHIND_PROXY else 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# Celery. Without CELERY_BROKER_URL the broker is in memory and a worker thread inside the web process
# (`manage.py serve_demo`) runs the same tasks: fine for the demo, lost on restart, one process only.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "memory://")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", "") or None
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {
    "runs.tasks.dissect_shard": {"queue": "gpu"},
    "runs.tasks.cam_gallery": {"queue": "gpu"},
    "runs.tasks.probe_set_convert": {"queue": "gpu"},
    "runs.tasks.gan_effects": {"queue": "gpu"},
    "runs.tasks.featviz_shard": {"queue": "gpu"},
}
# Long GPU tasks: acknowledge only after the work is done, hand a task back when its worker dies, take one
# task at a time, and keep an unacknowledged task invisible for longer than the longest shard.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 6 * 3600),
    # How often a Redis worker looks for messages whose worker died (unacknowledged past the timeout).
    "unacked_restore_interval": envint("CELERY_RESTORE_INTERVAL", 60),
    "unacked_restore_throttle": 1,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# How often a shard may be delivered again after its worker died before the run fails.
SHARD_MAX_DELIVERIES = envint("SHARD_MAX_DELIVERIES", 3)
# A shard queued this long ago and still pending, or running without a progress report for this long, is
# taken to be lost (a broker restarted without persistence, a worker gone) and queued again by the sweep.
SHARD_STALE_AFTER_S = envint("SHARD_STALE_AFTER_S", 900)
# The sweep runs under Celery beat (`celery -A workers beat`) every SWEEP_INTERVAL_S seconds, or by hand as
# `manage.py sweep_runs` where no beat runs.
SWEEP_INTERVAL_S = envint("SWEEP_INTERVAL_S", 60)
CELERY_BEAT_SCHEDULE = {
    "runs-sweep": {"task": "runs.tasks.runs_sweep", "schedule": float(SWEEP_INTERVAL_S)},
}
# Where workers keep per-run scratch (activation caches); shard results go through Django's storage.
WORK_DIR = Path(env("WORK_DIR", str(BASE_DIR / "var" / "work")))
# Where datasets registered for conversion (COCO, ADE20K, …) must lie: a path outside is refused.
PROBE_SET_SOURCE_ROOT = Path(env("PROBE_SET_SOURCE_ROOT", str(BASE_DIR / "var" / "data")))
# The largest image `import_units` takes (width x height, read from the header before decoding).
UNIT_IMAGE_MAX_PIXELS = envint("UNIT_IMAGE_MAX_PIXELS", 4096 * 4096)
# The most a probe set on S3 may hold; a larger prefix is refused before anything is downloaded.
PROBE_SET_MAX_BYTES = envint("PROBE_SET_MAX_BYTES", 200 * 2**30)

# Crowd providers.
MTURK_SANDBOX = envbool("MTURK_SANDBOX", True)
MTURK_REGION = env("MTURK_REGION", "us-east-1")
PROLIFIC_COMPLETION_URL = env("PROLIFIC_COMPLETION_URL", "https://app.prolific.com/submissions/complete")
# Prolific's API (README, "Prolific"): without a token a Prolific batch is a study URL and a completion code,
# and decisions are recorded here only. Calls time out after PROLIFIC_TIMEOUT_S seconds; rate limits (429),
# server errors and timeouts are tried PROLIFIC_ATTEMPTS times in all, with exponential backoff, except where
# a repeat could act twice (creating a study, paying a bonus).
PROLIFIC_API_TOKEN = env("PROLIFIC_API_TOKEN")
PROLIFIC_API_URL = env("PROLIFIC_API_URL", "https://api.prolific.com/api/v1/")
PROLIFIC_TIMEOUT_S = envint("PROLIFIC_TIMEOUT_S", 20)
PROLIFIC_ATTEMPTS = envint("PROLIFIC_ATTEMPTS", 4)
PROLIFIC_BACKOFF_S = envint("PROLIFIC_BACKOFF_S", 1)
# The participant group blocked participants are added to (Prolific's "block" is a blocklist group).
PROLIFIC_BLOCKLIST_GROUP_ID = env("PROLIFIC_BLOCKLIST_GROUP_ID")
# The workspace secret that signs webhook calls (POST /api/v1/hooks/secrets/); empty = webhooks refused.
PROLIFIC_WEBHOOK_SECRET = env("PROLIFIC_WEBHOOK_SECRET")
# The study's estimated completion time is this many minutes per task of the batch (at least 1 in all).
PROLIFIC_MINUTES_PER_TASK = envint("PROLIFIC_MINUTES_PER_TASK", 1)
# Crowd-side throttles per client IP, as django-ratelimit rates ("30/m": 30 a minute): new crowd workers (the
# local link's start, Prolific arrivals) and slots taken (accepting a task, MTurk task pages that open one).
RATELIMIT_WORKER_CREATE = envrate("RATELIMIT_WORKER_CREATE", "30/m")
RATELIMIT_SLOT_TAKE = envrate("RATELIMIT_SLOT_TAKE", "120/m")
# django-ratelimit finds the client's address by the rule every throttle shares (PROXY_COUNT).
RATELIMIT_IP_META_KEY = "config.client_ip.client_ip"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}
