"""The VPS page's push socket: ``/ws/live/<veid>/``, served by the ASGI server.

The handshake is refused (HTTP 403) when the Origin is not a page of this site,
when the browser's session has no login, or when that login may not see the VPS
(the same rule as its page: a customer their own, staff with vps.view). Then the
socket listens on the VPS's push channels (live.py) and sends the text
``changed`` at a notice at once, and once more after COALESCE seconds if more came
meanwhile (a burst of progress is two); the page fetches its live part then.
Every RECHECK seconds the login and its right are checked again: a signed-out or
suspended login's socket closes (code 4401). The browser sends nothing; what it
sends is ignored.
"""

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model

from hosting.consoles.consumer import header
from hosting.consoles.tickets import origin_allowed, session_alive
from hosting.core import redis_link
from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes.models import Node

from . import live

log = logging.getLogger(__name__)

COALESCE = 0.05  # seconds: the notices of a burst after its first are one "changed"
RECHECK = 30.0  # seconds between checks that the login may still see the VPS
REVOKED = 4401


def _may_see(user, veid):
    return bool(user and user.is_authenticated and user.is_active
                and VE.objects.for_user(user).filter(veid=veid).exists())


def _channels(veid):
    """The VPS's push channels: the web side's and every node's (it may move)."""
    origins = [live.WEB, *Node.objects.values_list("name", flat=True)]
    return [f"{live.PREFIX}:{origin}:{int(veid)}" for origin in origins]


def _still_allowed(user_id, session_key, veid):
    """The login may still see the VPS, in the same signed-in session (not signed out,
    not expired: the console's rule, tickets.session_alive)."""
    user = get_user_model().objects.filter(pk=user_id).first()
    return _may_see(user, veid) and session_alive(session_key, user)


class LiveConsumer(AsyncWebsocketConsumer):
    """One VPS page's push socket (see the module's docstring)."""

    async def connect(self):
        self.listener = self.redis = None
        self.veid = self.scope["url_route"]["kwargs"]["veid"]
        user = self.scope.get("user")
        self.user_id = getattr(user, "pk", None)
        self.session_key = getattr(self.scope.get("session"), "session_key", None)
        origin, host = header(self.scope, b"origin"), header(self.scope, b"host")
        if not origin_allowed(origin, host) or not self.session_key \
                or not await database_sync_to_async(_may_see)(user, self.veid):
            await self.close()  # before accept: the handshake fails (HTTP 403)
            return
        channels = await database_sync_to_async(_channels)(self.veid)
        # No read timeout: a page may stay quiet for hours (a dead Redis closes the
        # connection, and the page's backstop poll covers the rest).
        self.redis = redis_link.async_client(max_connections=2, timeout=None)
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
        except Exception as exc:  # no Redis: the page polls
            log.warning("push socket of VPS %s: not listening (%s)", self.veid, exc)
            await self.redis.aclose()
            await self.close()
            return
        await self.accept()
        self.listener = asyncio.ensure_future(self._listen(pubsub))

    async def _listen(self, pubsub):
        """Tell the page of each notice: at once, and once more at the end of a COALESCE
        window for whatever came during it."""
        loop = asyncio.get_running_loop()
        quiet_until, trailing = 0.0, None
        checker = asyncio.ensure_future(self._recheck())
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                now = loop.time()
                if now >= quiet_until:
                    quiet_until = now + COALESCE
                    await self.send(text_data="changed")
                elif trailing is None or trailing.done():
                    trailing = asyncio.ensure_future(self._send_later(quiet_until - now))
                    quiet_until += COALESCE  # the trailing notice opens the next window
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis gone: the page falls back to polling
            log.warning("push socket of VPS %s: stopped listening (%s)", self.veid, exc)
            await self.close(code=1011)
        finally:
            checker.cancel()
            if trailing is not None:
                trailing.cancel()
            await pubsub.aclose()

    async def _send_later(self, delay):
        await asyncio.sleep(delay)
        await self.send(text_data="changed")

    async def _recheck(self):
        """Close the socket once the login may no longer see the VPS (signed out,
        suspended, its right taken away)."""
        while True:
            await asyncio.sleep(RECHECK)
            try:
                allowed = await database_sync_to_async(_still_allowed)(
                    self.user_id, self.session_key, self.veid)
            except Exception as exc:  # the database is busy or gone: ask again later
                log.warning("push socket of VPS %s: rights not rechecked (%s)", self.veid, exc)
                continue
            if not allowed:
                await self.close(code=REVOKED)
                return

    async def receive(self, text_data=None, bytes_data=None):
        pass  # nothing is asked of the browser

    async def disconnect(self, code):
        if self.listener is not None:
            self.listener.cancel()
            try:
                await self.listener
            except (asyncio.CancelledError, Exception):
                pass
        if self.redis is not None:
            await self.redis.aclose()

