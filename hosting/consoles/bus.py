"""Redis clients of the console relay, with this process's own login.

The web side (ASGI server, Redis user ``hosting``) and the node's console
worker (user ``node-<name>``, which may touch ``console:<its name>:*`` only)
exchange sealed frames (frames.py) through two lists per session. A list is
consumed with BRPOP, so a frame is handed over the moment it is pushed; the
timeout only bounds how long a side waits before it looks at its timers.
Every push renews the list's expiry, so lists of a session whose ends died
vanish by themselves.
"""

from hosting.core import redis_link

# Seconds a BRPOP waits before the loop looks at its timers: well under the clients'
# redis_link.SOCKET_TIMEOUT, so a waiting BRPOP is never taken for a frozen Redis.
WAIT = 1
KEY_TTL_MS = 60_000  # a list nobody pushes to for this long goes


def web_client():
    """A redis.asyncio client of its own for one console socket (its BRPOP holds one
    connection, pushes use a second)."""
    return redis_link.async_client()


def node_client():
    """The node's shared client (thread-safe; a connection per waiting relay)."""
    return redis_link.shared_client()
