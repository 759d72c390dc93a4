"""Push: "VPS <veid> changed", from whoever changes it to the pages showing it.

Node workers (an operation's progress, its end, a VPS found stopped) and the web
side (an operation queued: dispatch.on_commit) publish on Redis channel
``live:<origin>:<veid>``, ``origin`` being the node's name or ``web``: a node's
Redis login may publish on its own ``live:<name>:*`` channels only
(hosting/controlplane.py). The ASGI server's socket for a VPS page
(live_socket.py) listens on the VPS's channels of the web side and of every node
and tells the page, which then fetches its live part with the browser's own
login: the notice carries nothing, so a page learns no more than it could poll.
Publishing never fails its caller and is bounded in time; a lost notice costs
the page only its next (slow) poll.
"""

import logging
import time

from django.conf import settings

log = logging.getLogger(__name__)

PREFIX = "live"
WEB = "web"
SOCKET_PATH = "/ws/live/{veid}/"  # the pages' push socket (hosting/routing.py)
PUBLISH_TIMEOUT = 0.25  # seconds (as dispatch.PUBLISH_TIMEOUT): a frozen Redis never answers
PAUSE_AFTER_FAILURE = 10.0  # seconds without publishing after one failed
_paused_until = {}  # Redis URL -> monotonic time


def channel(veid):
    """This process's channel for VPS ``veid``."""
    return f"{PREFIX}:{settings.NODE_NAME or WEB}:{int(veid)}"


def changed(veid):
    """Tell the pages showing VPS ``veid`` that it changed (now; best effort, bounded:
    a dead or frozen Redis costs a caller PUBLISH_TIMEOUT once, then nothing for
    PAUSE_AFTER_FAILURE seconds)."""
    from hosting.core import redis_link
    where = redis_link.url()
    if time.monotonic() < _paused_until.get(where, 0.0):
        return
    try:
        redis_link.shared_client(PUBLISH_TIMEOUT).publish(channel(veid), b"1")
    except Exception as exc:  # redis-py raises many types for "no Redis"
        _paused_until[where] = time.monotonic() + PAUSE_AFTER_FAILURE
        log.info("VPS %s: change not pushed (%s)", veid, exc)
