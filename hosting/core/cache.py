"""Django's Redis cache, falling back to this process's memory while Redis is away.

The cache only holds what can be recomputed (usage rollups, the capacity refresh
time) or kept per process for a while (re-authentication failure counts), so a
Redis restart or freeze must not turn pages into 500s. After a failure Redis is
left alone for RETRY_AFTER seconds: a frozen Redis costs one socket timeout per
process and period, not one per cache call.
"""

import logging
import time

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError, TimeoutError

log = logging.getLogger(__name__)

RETRY_AFTER = 5.0  # seconds without trying Redis after it failed
_UNREACHABLE = (ConnectionError, TimeoutError, OSError)


class FallbackRedisCache(RedisCache):
    """A RedisCache whose calls go to a local memory cache while Redis does not answer."""

    def __init__(self, server, params):
        super().__init__(server, params)
        # One store per process (Django makes a cache object per thread).
        self._local = LocMemCache(f"fallback:{params.get('KEY_PREFIX', '')}", params)
        self._down_until = 0.0

    def _call(self, name, *args, **kwargs):
        if time.monotonic() >= self._down_until:
            try:
                return getattr(super(), name)(*args, **kwargs)
            except _UNREACHABLE as exc:
                if not self._down_until:
                    log.warning("cache: Redis unreachable (%s); using process memory", exc)
                self._down_until = time.monotonic() + RETRY_AFTER
                return getattr(self._local, name)(*args, **kwargs)
            else:
                if self._down_until:
                    log.warning("cache: Redis answers again")
                self._down_until = 0.0
        return getattr(self._local, name)(*args, **kwargs)


def _delegating(name):
    def method(self, *args, **kwargs):
        return self._call(name, *args, **kwargs)
    method.__name__ = name
    return method


# BaseCache builds the rest (get_or_set, decr, ...) on these.
for _name in ("add", "get", "set", "touch", "delete", "get_many", "has_key", "incr",
              "set_many", "delete_many", "clear"):
    setattr(FallbackRedisCache, _name, _delegating(_name))
