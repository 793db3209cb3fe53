"""Settings for the research assistant.

Everything an operator changes comes from the environment (see README.md).
With neither DATABASE_URL nor REDIS_URL set, the app runs as the embedded
default: SQLite, an in-memory channel layer and a Celery worker inside the
web process. With them set, it expects PostgreSQL and Redis and separate
Daphne and Celery processes.
"""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from assistant.env import (
    env_backends,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY") or (
    # Only the embedded default may run without a configured key: it serves
    # one machine, and its key lives next to its SQLite file.
    "embedded-default-insecure-key-set-SECRET_KEY-in-production"
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "assistant",
    "assistant.api",
    "chat",
    "academic",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "assistant.security.ContentSecurityPolicyMiddleware",
    # WhiteNoise's, able to run async (assistant/static_files.py): every
    # middleware here is, so that under ASGI an async view (a /v1
    # completion) holds no thread while it waits.
    "assistant.static_files.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    # After the language is known, before anything reads the body.
    "assistant.security.RequestSizeLimitMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so that it turns a refused sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "assistant.urls"
ASGI_APPLICATION = "assistant.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: PostgreSQL in production, a SQLite file for the embedded default.
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var")))
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "assistant.sqlite3",
            # The embedded worker thread and the web process write to the
            # same file; wait for the lock instead of failing at once. A
            # transaction that reads first and then writes would fail at
            # once with "database is locked" when another writer holds the
            # lock (SQLite does not wait on that upgrade), so transactions
            # take the write lock when they begin; WAL lets reads go on
            # beside a write.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis carries the channel layer, the Celery broker and the cache. Without
# it, everything stays inside one process.
REDIS_URL = env_str("REDIS_URL")
EMBEDDED_WORKER = not REDIS_URL

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # Longer than channels_redis's own 5 s blocking read: redis-py
                # 8 defaults to a 5 s socket timeout, which lost that race and
                # closed every websocket that was quiet for five seconds.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "prefix": env_str("CHANNELS_PREFIX", "asgi"),
                # All the sockets of one Daphne process share one queue in
                # Redis, and this caps it; past it, messages are dropped.
                "capacity": 10000,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_PREFIX", "assistant"),
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "assistant.layers.EmbeddedChannelLayer",
            # Channels' default of 100 messages per socket drops a reply's
            # events, its end among them, while a busy process falls a few
            # seconds behind; the same cap as on Redis.
            "CONFIG": {"capacity": 10000},
        },
    }
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }

# Key prefix of the reply event logs (assistant.eventlog) in Redis.
CACHE_PREFIX_EVENTS = env_str("EVENTLOG_PREFIX", "replylog")

CELERY_BROKER_URL = REDIS_URL or "memory://"
# The in-process broker is polled; poll it often enough that a reply starts
# without a noticeable pause.
CELERY_BROKER_TRANSPORT_OPTIONS = {} if REDIS_URL else {"polling_interval": 0.05}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "assistant")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Threads in the embedded worker; one stream occupies one thread for as long
# as the model writes.
# Replies waiting in the admission queue hold a thread too, so there are
# enough for every reply a busy machine has open at once.
EMBEDDED_WORKER_THREADS = env_int("EMBEDDED_WORKER_THREADS", 64, minimum=1)
# Threads of each web process for its chat sockets' database work: how many
# questions it takes in at once, and at most as many database connections.
CHAT_ACTION_THREADS = env_int("CHAT_ACTION_THREADS", 8, minimum=1)

# The OpenAI-compatible model API.
MODEL_API_BASE_URL = env_str("MODEL_API_BASE_URL")
MODEL_API_KEY = env_secret("MODEL_API_KEY")
# More servers beside that one, as name=url pairs; each one's key comes from
# MODEL_BACKEND_<NAME>_KEY (or _KEY_FILE). Administrators may add others in
# Django admin (assistant.models.Backend).
MODEL_BACKENDS = env_backends("MODEL_BACKENDS")
MODEL_API_CONNECT_TIMEOUT = env_float("MODEL_API_CONNECT_TIMEOUT", 10.0, minimum=0.1)
# Limits on a streamed reply, in seconds. A busy backend queues a request
# without sending a byte and R1 may think for minutes, so the wait for the
# first data is long; once data flows, a pause as long as the idle limit
# means the backend is stuck. Keep-alive comments are not data.
MODEL_API_FIRST_TOKEN_TIMEOUT = env_float(
    "MODEL_API_FIRST_TOKEN_TIMEOUT", 600.0, minimum=0.1
)
MODEL_API_IDLE_TIMEOUT = env_float("MODEL_API_IDLE_TIMEOUT", 120.0, minimum=0.1)
MODEL_API_TOTAL_TIMEOUT = env_float("MODEL_API_TOTAL_TIMEOUT", 3600.0, minimum=1.0)
# The socket's own read limit, a backstop behind the limits above.
MODEL_API_READ_TIMEOUT = max(MODEL_API_FIRST_TOKEN_TIMEOUT, MODEL_API_IDLE_TIMEOUT) + 30
# A server that answers 429 or 503 has not started the reply; the worker
# keeps its slot and asks again, waiting longer each time, this many times.
MODEL_API_BUSY_RETRIES = env_int("MODEL_API_BUSY_RETRIES", 5, minimum=0)
# Longest single wait; a server asking (Retry-After) for longer is given up on.
MODEL_API_BUSY_MAX_WAIT = env_float("MODEL_API_BUSY_MAX_WAIT", 60.0, minimum=0.1)
MODEL_LIST_CACHE_SECONDS = env_int("MODEL_LIST_CACHE_SECONDS", 60, minimum=0)
DEFAULT_MODEL = env_str("DEFAULT_MODEL")

# How often a streaming reply is written to the database. Events reach the
# browser at once; the row catches up at this pace and at the end.
STREAM_SAVE_INTERVAL = env_float("STREAM_SAVE_INTERVAL", 1.0, minimum=0.05)
# How often the rendered Markdown of a streaming answer is refreshed.
STREAM_RENDER_INTERVAL = env_float("STREAM_RENDER_INTERVAL", 0.15, minimum=0.02)
# How quickly a Stop reaches the upstream connection.
STREAM_STOP_POLL_INTERVAL = env_float("STREAM_STOP_POLL_INTERVAL", 0.2, minimum=0.02)
MAX_MESSAGE_CHARS = env_int("MAX_MESSAGE_CHARS", 60000, minimum=1)
# Longest a reply may wait in the app's queue for a free backend slot.
QUEUE_TIMEOUT = env_float("QUEUE_TIMEOUT", 1800.0, minimum=1.0)
# A backend slot is a lease the worker renews; a worker killed mid-reply
# gives its slot back when the lease runs out this many seconds later.
ADMISSION_LEASE_SECONDS = env_float("ADMISSION_LEASE_SECONDS", 30.0, minimum=1.0)
# The worker writing a reply marks it alive at a third of this; a reply
# being written whose mark is older belongs to a worker that died, and is
# ended as interrupted with the text it had (chat.recovery).
REPLY_HEARTBEAT_SECONDS = env_float("REPLY_HEARTBEAT_SECONDS", 15.0, minimum=1.0)

# Which engine reads a formula from an image (academic.ocr_engine, README):
# "auto" tries the offline engine first when its extra is installed and
# hands a doubtful reading to the vision model; "offline" keeps formulas
# on this machine, doubtful readings included; "vision" never uses the
# offline engine. Tables always go to the vision model.
IMG2TEX_ENGINE = env_str("IMG2TEX_ENGINE", "auto").strip().lower()
if IMG2TEX_ENGINE not in ("auto", "offline", "vision"):
    raise ImproperlyConfigured(
        f"IMG2TEX_ENGINE must be auto, offline or vision, got {IMG2TEX_ENGINE!r}"
    )
# Offline readings at once per deployment: each holds a CPU core.
IMG2TEX_OFFLINE_CONCURRENCY = env_int("IMG2TEX_OFFLINE_CONCURRENCY", 1, minimum=1)
IMG2TEX_OFFLINE_MAX_TOKENS = env_int("IMG2TEX_OFFLINE_MAX_TOKENS", 400, minimum=1)
IMG2TEX_OFFLINE_TIME_LIMIT = env_float("IMG2TEX_OFFLINE_TIME_LIMIT", 15.0, minimum=0.0)
IMG2TEX_OFFLINE_THREADS = env_int("IMG2TEX_OFFLINE_THREADS", 1, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat-home"
LOGOUT_REDIRECT_URL = "login"

# Single sign-on through the institution's OpenID Connect provider (see
# docs/oidc.md). Without OIDC_ISSUER only local accounts sign in, and
# nothing reaches out to a provider.
OIDC_ISSUER = env_str("OIDC_ISSUER").strip().rstrip("/")
OIDC_RP_CLIENT_ID = env_str("OIDC_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env_secret("OIDC_CLIENT_SECRET")
OIDC_RP_SCOPES = env_str("OIDC_SCOPES", "openid email profile")
OIDC_TIMEOUT = env_float("OIDC_TIMEOUT", 10.0, minimum=0.1)
# Claims whose values become groups, as claim names or dotted paths.
OIDC_GROUP_CLAIMS = env_list("OIDC_GROUP_CLAIMS", [])
OIDC_GROUP_PREFIX = env_str("OIDC_GROUP_PREFIX", "oidc:")
# With a claim set, only users who carry it (with one of the values, if
# given) may sign in through the provider.
OIDC_REQUIRED_CLAIM = env_str("OIDC_REQUIRED_CLAIM")
OIDC_REQUIRED_VALUES = env_list("OIDC_REQUIRED_VALUES", [])
LOCAL_LOGIN_ENABLED = env_bool("LOCAL_LOGIN_ENABLED", True)
if OIDC_ISSUER and not (OIDC_RP_CLIENT_ID and OIDC_RP_CLIENT_SECRET):
    raise ImproperlyConfigured(
        "OIDC_ISSUER needs OIDC_CLIENT_ID and OIDC_CLIENT_SECRET"
    )
if not (OIDC_ISSUER or LOCAL_LOGIN_ENABLED):
    raise ImproperlyConfigured("LOCAL_LOGIN_ENABLED=false needs OIDC_ISSUER set")

# What mozilla-django-oidc is told beyond that: the code flow with PKCE, ID
# tokens signed with RS256 and checked against the provider's JWKS, the ID
# token kept for logout, client_secret_basic as the spec's default.
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_USE_PKCE = True
OIDC_STORE_ID_TOKEN = True
OIDC_TOKEN_USE_BASIC_AUTH = True
OIDC_AUTHENTICATION_CALLBACK_URL = "oidc-callback"
OIDC_OP_LOGOUT_URL_METHOD = "assistant.oidc.provider_logout_url"

# The throttle comes first: it refuses a locked-out sign-in before any
# backend checks the password (assistant/throttling.py).
AUTHENTICATION_BACKENDS = ["assistant.throttling.SignInThrottleBackend"]
if OIDC_ISSUER:
    AUTHENTICATION_BACKENDS.append("assistant.oidc.InstitutionBackend")
if LOCAL_LOGIN_ENABLED:
    AUTHENTICATION_BACKENDS.append("django.contrib.auth.backends.ModelBackend")

# Password sign-ins: this many failures for one username from one address
# lock that pair out for the cool-off.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
LOGIN_COOLOFF_MINUTES = env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1)
# Reverse proxies in front of the app that append to X-Forwarded-For; the
# client's address is read that many entries from the right. 0 trusts no
# header and takes the socket's address.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
AXES_ENABLED = env_bool("LOGIN_THROTTLE", True)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "assistant.throttling.client_ip"
AXES_WHITELIST_CALLABLE = "assistant.throttling.is_not_a_password_sign_in"
AXES_LOCKOUT_CALLABLE = "assistant.throttling.locked_out"
# Successful sign-ins are not worth a row each; failures and lockouts are
# in the admin (Axes: access attempts).
AXES_DISABLE_ACCESS_LOG = True
# Axes logs each failure and lockout as a warning; the address helps whoever
# is on call, the username may be a password typed in the wrong box.
AXES_SENSITIVE_PARAMETERS = ["username"]

LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", _("Simplified Chinese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "var" / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Behind a reverse proxy that ends TLS, the proxy's X-Forwarded-Proto tells
# Django the request came over HTTPS (CSRF's origin check needs it). Only
# set it when every request passes the proxy, which must set the header.
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Behind TLS (SECURE_COOKIES=true) browsers are told to use HTTPS only; the
# embedded default serves plain HTTP on loopback and must not say so.
SECURE_HSTS_SECONDS = env_int(
    "HSTS_SECONDS", 31536000 if SESSION_COOKIE_SECURE else 0, minimum=0
)
# A host whose parent domain also serves plain-HTTP sites turns these off
# (and `check --deploy` then warns about them).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool(
    "HSTS_INCLUDE_SUBDOMAINS", SESSION_COOKIE_SECURE
)
SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", SESSION_COOKIE_SECURE)
# Behind a TLS-terminating proxy the app sees plain HTTP; the proxy says
# what the browser used in X-Forwarded-Proto, which is trusted only with
# TRUSTED_PROXY_COUNT set (a client could send it too). Without it, an SSL
# redirect behind such a proxy would redirect for ever, so the redirect is
# on by default only where the header is trusted.
if TRUSTED_PROXY_COUNT:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool(
    "SSL_REDIRECT", SESSION_COOKIE_SECURE and TRUSTED_PROXY_COUNT > 0
)
SECURE_CONTENT_TYPE_NOSNIFF = True
# The largest request body of any kind; each upload has a smaller limit of
# its own (a project zip 20 MB, an image 10 MB, an attachment 10 MB).
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 25 * 1024 * 1024, minimum=1024)
# Form fields outside files; the polish form's pasted text is the largest.
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# plain: one readable line per record; json: one JSON object per line, for
# a log collector.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "assistant.logformat.JSONFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "assistant": {"level": LOG_LEVEL},
        "chat": {"level": LOG_LEVEL},
        "academic": {"level": LOG_LEVEL},
        "celery": {"level": "WARNING"},
        # The in-memory broker of the embedded worker has no host name, which
        # kombu warns about on every connection.
        "kombu.connection": {"level": "ERROR"},
    },
}

# The system message every chat starts with. Empty sends none.
CHAT_SYSTEM_PROMPT = env_str(
    "CHAT_SYSTEM_PROMPT",
    "You are a careful research assistant for scientists. Answer in the language "
    "of the question. Use Markdown; write formulas in LaTeX between $ or $$.",
)
# After a conversation's first answer a model suggests its title, through
# the same queue at batch priority. TITLE_MODEL names the model; empty takes
# the first model offered that does not reason (a reasoning model would think
# for hundreds of tokens over a title), and with none the first words stay.
AUTO_TITLES = env_bool("AUTO_TITLES", True)
TITLE_MODEL = env_str("TITLE_MODEL")
# Below this many output tokens R1 cannot finish thinking; the user is warned.
REASONING_MIN_OUTPUT_TOKENS = env_int("REASONING_MIN_OUTPUT_TOKENS", 2048, minimum=0)
