"""Django settings: embedded defaults (SQLite) unless the environment says otherwise."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("HOSTING_DATA_DIR", BASE_DIR / "var"))
# The part of DATA_DIR the unprivileged web user writes (SQLite, beat schedule).
DB_DIR = DATA_DIR / "db"

# HOSTING_SECRET_KEY in production; otherwise `make run` generates one into
# the data dir (see hosting/stack.py) and tests fall back to a fixed dev key.
SECRET_KEY = os.environ.get("HOSTING_SECRET_KEY") or "dev-only-insecure-key"
DEBUG = os.environ.get("HOSTING_DEBUG", "0") == "1"
ALLOWED_HOSTS = os.environ.get("HOSTING_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "hosting.core",
    "hosting.customers",
    "hosting.plans",
    "hosting.nodes",
    "hosting.environments",
    "hosting.ipam",
    "hosting.operations",
    "hosting.usage",
    "hosting.consoles",
]

MIDDLEWARE = [
    "hosting.core.middleware.RequestSizeLimitMiddleware",  # 413 before anything reads a body
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hosting.urls"
WSGI_APPLICATION = "hosting.wsgi.application"
# The ASGI server (uvicorn) serves the console's WebSockets (hosting/asgi.py, consoles/).
ASGI_APPLICATION = "hosting.asgi.application"

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
        "hosting.core.context.navigation",
    ]},
}]

# SQLite by default; DATABASE_URL=postgres://user:pass@host:5432/name for production.
# The web process and node workers share the file, hence WAL, a busy timeout and
# IMMEDIATE transactions (no lock upgrades that fail with "database is locked").
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": DB_DIR / "hosting.sqlite3",
                         "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE",
                                     "init_command": "PRAGMA journal_mode=WAL; "
                                                     "PRAGMA secure_delete=ON;"}}}
if os.environ.get("DATABASE_URL"):
    from urllib.parse import unquote, urlsplit
    _url = urlsplit(os.environ["DATABASE_URL"])
    if _url.scheme not in ("postgres", "postgresql"):
        raise RuntimeError("DATABASE_URL must be postgres://user:password@host:port/name")
    DATABASES["default"] = {"ENGINE": "django.db.backends.postgresql",
                            "NAME": unquote(_url.path.lstrip("/")),
                            "USER": unquote(_url.username or ""),
                            "PASSWORD": unquote(_url.password or ""),
                            "HOST": _url.hostname or "", "PORT": str(_url.port or ""),
                            # A connection per request costs PostgreSQL a backend
                            # process fork (several ms of every page): each web thread
                            # keeps its own, checked before reuse.
                            "CONN_MAX_AGE": int(os.environ.get("HOSTING_DB_CONN_MAX_AGE", "60")),
                            "CONN_HEALTH_CHECKS": True}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Strict"

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
WHITENOISE_USE_FINDERS = True  # serve from the apps' static dirs: no collectstatic step
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Bodies over this get 413 (hosting.core.middleware), API and forms alike; the
# largest legitimate body (an order with an SSH key) is a few KiB.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1 << 20

REST_FRAMEWORK = {
    # Token first: an anonymous API call gets 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # hashed keys (rest_framework.authtoken is unused)
        "hosting.core.tokens.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["hosting.core.filters.FilterBackend"],  # numbers in range
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "hosting.core.api.AutoSchema",  # documents the error answers
    "EXCEPTION_HANDLER": "hosting.core.api.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Hosting API",
    "DESCRIPTION": "Customers, plans, nodes and VPSes. Lifecycle actions answer 202 with "
                   "an Operation to poll at /api/v1/operations/<id>/.",
    "VERSION": "1",
    "SWAGGER_UI_DIST": "SIDECAR",  # served from this host: no CDN needed
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
}

# Celery: messages carry only operation ids; everything else is in the database.
# The node a root worker serves (queues node.<name> and node.<name>.chores);
# see hosting/nodes/worker.py.
NODE_NAME = os.environ.get("HOSTING_NODE_NAME", "")
# host:port of this node's migration sshd as other nodes reach it (`vectl migration
# serve`); blank: VEs are not moved to this node.
MIGRATE_ADDRESS = os.environ.get("HOSTING_MIGRATE_ADDRESS", "")


def _redis_url():
    """HOSTING_REDIS_URL with the ACL user and password of this process put in.

    HOSTING_REDIS_USER (default: ``node-<name>`` on a node, else ``hosting``) and
    HOSTING_REDIS_PASSWORD_FILE (a 0600 file; the password never sits in a unit
    file, the environment or a log); see docs/security.md.
    """
    from urllib.parse import quote
    url = os.environ.get("HOSTING_REDIS_URL") or "redis://127.0.0.1:6379/0"
    password_file = os.environ.get("HOSTING_REDIS_PASSWORD_FILE")
    scheme, sep, rest = url.partition("://")
    if not password_file or not sep or "@" in rest.split("/", 1)[0]:
        return url
    user = os.environ.get("HOSTING_REDIS_USER") or (f"node-{NODE_NAME}" if NODE_NAME
                                                    else "hosting")
    password = Path(password_file).read_text().strip()
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


CELERY_BROKER_URL = _redis_url()
# TLS to a Redis on another machine: HOSTING_REDIS_URL=rediss://... and the CA
# that signed Redis's certificate (docs/security.md, "Several machines").
REDIS_CA_FILE = os.environ.get("HOSTING_REDIS_CA_FILE", "")
if REDIS_CA_FILE:
    import ssl
    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": REDIS_CA_FILE}

# With Redis configured, the cache (re-authentication failure counts) is shared
# by all web processes; otherwise each keeps its own (tests, one-off commands).
# Node workers use no cache (their Redis user may not touch it).
if os.environ.get("HOSTING_REDIS_URL") and not NODE_NAME:
    CACHES = {"default": {
        "BACKEND": "hosting.core.cache.FallbackRedisCache",
        "LOCATION": CELERY_BROKER_URL.replace("redis+socket://", "unix://"),
        "KEY_PREFIX": "hosting",
        # A frozen Redis must not hang a web request for long.
        "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1,
                    **({"ssl_ca_certs": REDIS_CA_FILE, "ssl_cert_reqs": "required"}
                       if REDIS_CA_FILE else {})}}}
# The Channels layer of the ASGI server's console sockets: the same Redis, the web user's
# login, keys under hosting:asgi*. It closes open consoles from wherever a suspension or
# termination is asked (hosting/consoles/ending.py); the web processes and housekeeping
# send to it, nodes have none (their Redis user may not use it). Without Redis (tests,
# one-off commands) each process has its own in memory.
if os.environ.get("HOSTING_REDIS_URL") and not NODE_NAME:
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"prefix": "hosting:asgi", "expiry": 30, "hosts": [{
            "address": CELERY_BROKER_URL.replace("redis+socket://", "unix://"),
            # Longer than the layer's own 5 s blocking reads; connecting is quick or never.
            "socket_timeout": 10, "socket_connect_timeout": 1,
            **({"ssl_ca_certs": REDIS_CA_FILE, "ssl_cert_reqs": "required"}
               if REDIS_CA_FILE else {})}]}}}
elif not NODE_NAME:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
CELERY_TASK_DEFAULT_QUEUE = "hosting"
# Signed messages (Celery's "auth" serializer): HOSTING_SIGNING_KEY (this side's
# private key), HOSTING_SIGNING_CERT (its certificate) and HOSTING_SIGNING_TRUST
# (a glob of the certificates whose signatures are accepted). A node worker
# refuses to start without them (hosting/celery.py); see docs/security.md.
SIGNING = all(os.environ.get(f"HOSTING_SIGNING_{v}") for v in ("KEY", "CERT", "TRUST"))
if SIGNING:
    CELERY_TASK_SERIALIZER = "auth"
    CELERY_ACCEPT_CONTENT = ["auth"]
    CELERY_SECURITY_KEY = os.environ["HOSTING_SIGNING_KEY"]
    CELERY_SECURITY_CERTIFICATE = os.environ["HOSTING_SIGNING_CERT"]
    CELERY_SECURITY_CERT_STORE = os.environ["HOSTING_SIGNING_TRUST"]
    CELERY_SECURITY_DIGEST = "sha256"
else:
    CELERY_TASK_SERIALIZER = "json"
    CELERY_ACCEPT_CONTENT = ["json"]
# No remote control (celery inspect/control): nothing uses it, and it would be a
# way to steer workers through Redis.
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_TASK_ACKS_LATE = True  # a task killed mid-way is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True  # results live in the Operation rows
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# One priority level (kombu would otherwise also poll a "<queue><sep><n>" key per level),
# and on a node its own keys for unacknowledged messages (its Redis user may
# touch no other node's; hosting/controlplane.py).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "priority_steps": [0]}
if NODE_NAME:
    from hosting.controlplane import node_transport_options
    CELERY_BROKER_TRANSPORT_OPTIONS.update(node_transport_options(NODE_NAME))
# Retry a lost Redis twice a second (kombu's default backs off to 30 s); at each
# (re)connection the node worker sends again what Redis may have lost.
CELERY_WORKER_CONSUMER = "hosting.celery:QuickReconnectConsumer"
# A Redis restart must not abort operations that are running on a node.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BEAT_SCHEDULE = {
    "mark-stale-nodes": {"task": "hosting.nodes.tasks.mark_stale_nodes", "schedule": 30.0},
    # Queues an evacuation's or rebalance's next moves as earlier ones end (a live move
    # takes ~1.5 s; a node may not write to this queue to say so itself): two small
    # queries a second when nothing moves.
    "move-batches": {"task": "hosting.nodes.tasks.move_batches", "schedule": 1.0},
    "requeue-lost-operations": {"task": "hosting.operations.tasks.requeue_lost",
                                "schedule": 60.0},
    "roll-up-usage": {"task": "hosting.usage.tasks.roll_up_usage", "schedule": 300.0},
    # Scheduled backups: each node's window is checked every minute (backup_schedule.py).
    "schedule-backups": {"task": "hosting.environments.tasks.schedule_backups",
                         "schedule": 60.0},
    # Every node verifies its backup repository (restic check) once a day, and the
    # backups of VPSes terminated long enough ago go.
    "check-backups": {"task": "hosting.environments.tasks.check_repositories",
                      "schedule": 86400.0},
    "expire-backups": {"task": "hosting.environments.tasks.expire_backups",
                       "schedule": 3600.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DB_DIR / "celerybeat-schedule")

NODE_RUN_DIR = os.environ.get("HOSTING_NODE_RUN_DIR", "/run/hosting-node")
NODE_HEARTBEAT_SECONDS = float(os.environ.get("HOSTING_HEARTBEAT_SECONDS", "10"))
NODE_OFFLINE_AFTER_SECONDS = float(os.environ.get("HOSTING_OFFLINE_AFTER_SECONDS", "60"))
# How often a node samples its VEs' usage (graphs, overcommit reports).
NODE_SAMPLE_SECONDS = float(os.environ.get("HOSTING_SAMPLE_SECONDS", "30"))
# The node's operations worker looks this often for operations of its node that
# have no message in Redis (the web could not publish, Redis lost it) and are
# older than OPERATION_RESEND_SECONDS, and sends them again; see operations/relay.py.
OPERATION_RELAY_SECONDS = float(os.environ.get("HOSTING_RELAY_SECONDS", "2"))
OPERATION_RESEND_SECONDS = float(os.environ.get("HOSTING_RESEND_SECONDS", "3"))
# Backstop (housekeeping, every minute): a queued operation no worker took within
# this time and not waiting in its queue is sent again.
OPERATION_REQUEUE_SECONDS = float(os.environ.get("HOSTING_REQUEUE_SECONDS", "120"))
# Scheduled backups in each node's window (backup_schedule.py): "off" stops them
# (the test suite's live stacks, whose VPSes must not be backed up behind their backs).
BACKUP_SCHEDULE = os.environ.get("HOSTING_BACKUP_SCHEDULE", "on") != "off"
# Backups of a terminated VPS are kept this long (staff can restore them), then deleted.
BACKUP_KEEP_DAYS_AFTER_TERMINATION = int(os.environ.get("HOSTING_BACKUP_KEEP_DAYS", "30"))
# A scheduled backup that failed is tried again after this long, at most this often a day.
BACKUP_RETRY_MINUTES = float(os.environ.get("HOSTING_BACKUP_RETRY_MINUTES", "15"))
BACKUP_ATTEMPTS = 3
# The largest file the portal downloads out of a backup (bigger ones: restore into the VPS).
BACKUP_DOWNLOAD_MAX_BYTES = 64 << 20

# Web consoles (hosting/consoles/, docs/console.md). CONSOLE_URL: where browsers open the
# console's WebSocket: ws[s]://host[:port] (no path), or ":<port>" for the page's own host
# on that port (`make run`: the ASGI server's); blank: this site itself, where the reverse
# proxy passes /ws/ to the ASGI server (production).
CONSOLE_URL = os.environ.get("HOSTING_CONSOLE_URL", "")
CONSOLE_TICKET_SECONDS = float(os.environ.get("HOSTING_CONSOLE_TICKET_SECONDS", "30"))
CONSOLE_IDLE_SECONDS = float(os.environ.get("HOSTING_CONSOLE_IDLE_SECONDS", str(15 * 60)))
# An open console checks this often that its user may still have it (a backstop for a
# suspension or sign-out whose message was lost).
CONSOLE_RECHECK_SECONDS = float(os.environ.get("HOSTING_CONSOLE_RECHECK_SECONDS", "15"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("HOSTING_LOG_LEVEL", "INFO")},
}

# What customers may do to their VPS's plan themselves (staff and billing may do anything):
# "upgrade" (a plan that takes nothing away), "any", or "none". See environments/plan_change.py.
CUSTOMER_PLAN_CHANGES = os.environ.get("HOSTING_CUSTOMER_PLAN_CHANGES", "upgrade")

# ---- Accounts (issue 14): staff roles, sign-in lockout, two-factor, sessions, headers ----
# (one block, to merge easily; see docs/dashboard.md "Accounts")
AUTHENTICATION_BACKENDS = ["hosting.core.lockout.LockoutBackend"]
# Sign-in lockout (hosting/core/lockout.py): failures per account / per address within
# the window lock it for LOGIN_COOLOFF seconds, doubled by each lockout in a row (capped).
LOGIN_FAILURE_LIMIT = int(os.environ.get("HOSTING_LOGIN_FAILURE_LIMIT", "5"))
LOGIN_ADDRESS_FAILURE_LIMIT = int(os.environ.get("HOSTING_LOGIN_ADDRESS_FAILURE_LIMIT", "20"))
LOGIN_FAILURE_WINDOW = 900
LOGIN_COOLOFF = float(os.environ.get("HOSTING_LOGIN_COOLOFF", "60"))
LOGIN_COOLOFF_MAX = 3600
LOGIN_LOCKOUT_MEMORY = 86400
# Behind N reverse proxies (production), the client address is the one the nearest
# proxy appended to X-Forwarded-For; 0 (the default): REMOTE_ADDR, nothing forwarded trusted.
TRUSTED_PROXIES = int(os.environ.get("HOSTING_TRUSTED_PROXIES", "0"))
# Two-factor sign-in (django-otp: TOTP devices, and our hashed recovery codes): required of
# staff; of customers too with HOSTING_2FA_CUSTOMERS=required (default: optional).
INSTALLED_APPS += ["django_otp", "django_otp.plugins.otp_totp"]
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                  "django_otp.middleware.OTPMiddleware")
MIDDLEWARE.insert(MIDDLEWARE.index("django_otp.middleware.OTPMiddleware") + 1,
                  "hosting.core.twofactor.TwoFactorMiddleware")
TWO_FACTOR_CUSTOMERS = os.environ.get("HOSTING_2FA_CUSTOMERS", "optional")
OTP_TOTP_ISSUER = os.environ.get("HOSTING_2FA_ISSUER", "Hosting")
# Headers (hosting/core/security.py): CSP without inline script, frames denied, a referrer
# policy; sessions end after SESSION_IDLE_SECONDS idle or SESSION_ABSOLUTE_SECONDS in all.
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "hosting.core.security.SecurityHeadersMiddleware")
MIDDLEWARE.insert(MIDDLEWARE.index("django_otp.middleware.OTPMiddleware"),
                  "hosting.core.security.SessionExpiryMiddleware")
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_IDLE_SECONDS = int(os.environ.get("HOSTING_SESSION_IDLE_SECONDS", str(30 * 60)))
SESSION_ABSOLUTE_SECONDS = int(os.environ.get("HOSTING_SESSION_ABSOLUTE_SECONDS",
                                              str(12 * 3600)))
SESSION_COOKIE_AGE = SESSION_ABSOLUTE_SECONDS  # the cookie goes with the session
# Production (HOSTING_PRODUCTION=1; TLS in front, see docs/dashboard.md): `manage.py check
# --deploy` is clean. Secure cookies, HTTPS only, HSTS; the proxy's X-Forwarded-Proto is
# trusted only with HOSTING_TRUSTED_PROXIES set.
PRODUCTION = os.environ.get("HOSTING_PRODUCTION", "0") == "1"
# One schema name for a VPS's state (actual and desired share it; the deploy check warns).
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {})["VPSStateEnum"] = \
    "hosting.environments.models.VirtualEnvironment.State"
if PRODUCTION:
    from django.core.exceptions import ImproperlyConfigured
    if not os.environ.get("HOSTING_SECRET_KEY") or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("HOSTING_PRODUCTION=1 needs HOSTING_SECRET_KEY (50+ random "
                                   "characters)")
    DEBUG = False
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = os.environ.get("HOSTING_SSL_REDIRECT", "1") == "1"
    SECURE_HSTS_SECONDS = int(os.environ.get("HOSTING_HSTS_SECONDS", str(365 * 86400)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = os.environ.get("HOSTING_HSTS_SUBDOMAINS", "1") == "1"
    SECURE_HSTS_PRELOAD = os.environ.get("HOSTING_HSTS_PRELOAD", "1") == "1"
    if TRUSTED_PROXIES:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# ---- end of Accounts ----------------------------------------------------------------------
