"""Redis clients of the console relay, with this process's own login.

The web side (ASGI server, Redis user ``hosting``) and the node's console
worker (user ``node-<name>``, which may touch ``console:<its name>:*`` only)
exchange sealed frames (frames.py) through two lists per session. A list is
consumed with BRPOP, so a frame is handed over the moment it is pushed; the
timeout only bounds how long a side waits before it looks at its timers.
Every push renews the list's expiry, so lists of a session whose ends died
vanish by themselves.
"""

import threading

import redis
from django.conf import settings

WAIT = 1  # seconds a BRPOP waits before the loop looks at its timers
KEY_TTL_MS = 60_000  # a list nobody pushes to for this long goes
SOCKET_TIMEOUT = WAIT + 9  # a call blocked longer than this: Redis is gone or frozen
_node_client, _node_lock = None, threading.Lock()


def url():
    """This process's Redis URL with its login (settings._redis_url), for redis-py."""
    return settings.CELERY_BROKER_URL.replace("redis+socket://", "unix://", 1)


def _options():
    options = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": 2}
    if settings.REDIS_CA_FILE and url().startswith("rediss://"):
        options.update(ssl_ca_certs=settings.REDIS_CA_FILE, ssl_cert_reqs="required")
    return options


def web_client():
    """A redis.asyncio client of its own for one console socket (its BRPOP holds one
    connection, pushes use a second)."""
    from redis import asyncio as aioredis
    return aioredis.Redis.from_url(url(), max_connections=4, **_options())


def node_client():
    """The node's shared client (thread-safe; a connection per waiting relay)."""
    global _node_client
    with _node_lock:
        if _node_client is None:
            _node_client = redis.Redis.from_url(url(), **_options())
        return _node_client
