"""Redis clients of this process, logged in as its own Redis user (settings._redis_url:
``hosting`` on the web side, ``node-<name>`` on a node; hosting/controlplane.py says
what each may touch)."""

import threading

import redis
from django.conf import settings

SOCKET_TIMEOUT = 10  # a call blocked longer than this: Redis is gone or frozen
_shared, _shared_lock = {}, threading.Lock()  # (URL, timeout) -> client


def url():
    """This process's Redis URL with its login, for redis-py."""
    return settings.CELERY_BROKER_URL.replace("redis+socket://", "unix://", 1)


def options(timeout=SOCKET_TIMEOUT):
    """redis-py options; ``timeout`` None: reads wait as long as it takes (a pub/sub
    listener), connecting still gives up after 2 s."""
    found = {"socket_timeout": timeout,
             "socket_connect_timeout": 2 if timeout is None else min(2, timeout)}
    if settings.REDIS_CA_FILE and url().startswith("rediss://"):
        found.update(ssl_ca_certs=settings.REDIS_CA_FILE, ssl_cert_reqs="required")
    return found


def async_client(max_connections=4, timeout=SOCKET_TIMEOUT):
    """A redis.asyncio client of its own (for one socket of the ASGI server)."""
    from redis import asyncio as aioredis
    return aioredis.Redis.from_url(url(), max_connections=max_connections, **options(timeout))


def shared_client(timeout=SOCKET_TIMEOUT):
    """The process's shared synchronous client whose calls give up after ``timeout``
    seconds (thread-safe: a connection per caller at a time)."""
    with _shared_lock:
        key = (url(), timeout)  # the settings' login (tests change it)
        if key not in _shared:
            _shared[key] = redis.Redis.from_url(key[0], **options(timeout))
        return _shared[key]
