"""The dashboard's settings for a fuzz run: nothing leaves the process.

Operations are published to Celery's in-memory transport (no Redis is needed or
reached, and nothing consumes them), logins hash with a fast hasher (the token
endpoint is fuzzed thousands of times) and the cache is per process.
"""

from hosting.settings import *  # noqa: F403

CELERY_BROKER_URL = "memory://"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"console": {"class": "logging.StreamHandler", "level": "ERROR"}},
           "root": {"handlers": ["console"], "level": "INFO"}}  # 500s still show
