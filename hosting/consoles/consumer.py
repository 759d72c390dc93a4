"""The browser's end of a console: ``/ws/console/<veid>/?ticket=...&rows=..&cols=..``.

Served by the ASGI server (hosting/asgi.py). The handshake is refused (HTTP
403, nothing else happens) when the Origin is not a page of this site. Then the
ticket is redeemed (tickets.redeem: one use, same login, session, origin and
VPS, rights checked again); a refused ticket gets the socket accepted and closed
at once with code 4403 and the reason, and no relay starts. An accepted one
joins the session's Channels groups (ending.py), sends the relay task to the
VPS's node and pumps frames both ways.

What the browser sends: binary messages are keystrokes or pasted text (bytes);
text messages are JSON, ``{"type": "resize", "rows": R, "cols": C}``. What it
receives: binary messages are console output; text messages are JSON status,
``{"type": "open"}`` once the node has the console, and ``{"type": "closed",
"reason": ..., "message": ...}`` just before the server closes the socket with
the reason's code (CLOSE_CODES).
"""

import asyncio
import json
import logging
import time
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import bus, ending, frames, tickets
from .models import ConsoleSession

log = logging.getLogger(__name__)
Reason = ConsoleSession.Reason

# WebSocket close codes by reason (4000-4999 are the application's own).
CLOSE_CODES = {Reason.CLIENT: 1000, Reason.REFUSED: 4403, Reason.REVOKED: 4401,
               Reason.SUSPENDED: 4423, Reason.TERMINATED: 4410, Reason.ENDED: 4410,
               Reason.IDLE: 4408, Reason.NODE: 4502, Reason.LOST: 4502}
OPEN_TIMEOUT = 15.0  # the node must have the console by then (its task expires before)
NODE_SILENCE = 30.0  # a node that says nothing for this long is gone
ALIVE_EVERY = 10.0  # tell the node we are here when nothing else moves
MAX_PENDING = 512  # input frames the node has not taken: it does not keep up
DEFAULT_SIZE = (24, 80)
RELAY_TASK = "hosting.consoles.tasks.relay_console"  # sent by name (operations/dispatch.py)


def _size(query):
    """(rows, cols) asked in the query string, else DEFAULT_SIZE."""
    try:
        rows, cols = int(query["rows"][0]), int(query["cols"][0])
    except (KeyError, ValueError, IndexError):
        return DEFAULT_SIZE
    if 1 <= rows <= frames.MAX_SIZE and 1 <= cols <= frames.MAX_SIZE:
        return rows, cols
    return DEFAULT_SIZE


def header(scope, name):
    """The value of HTTP header ``name`` (lower-case bytes) of a socket's handshake, or ""."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


class ConsoleConsumer(AsyncWebsocketConsumer):
    """One browser's console socket (see the module's docstring)."""

    async def connect(self):
        self.row, self.ended, self.redis, self.pump = None, False, None, None
        self.joined = []
        origin, host = header(self.scope, b"origin"), header(self.scope, b"host")
        if not tickets.origin_allowed(origin, host):
            log.warning("console socket refused: origin %r, host %r", origin, host)
            await self.close()  # before accept: the handshake fails (HTTP 403)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        session = self.scope.get("session")
        self.session_key = getattr(session, "session_key", None)
        self.user = self.scope.get("user")
        try:
            self.row = await database_sync_to_async(tickets.redeem)(
                (query.get("ticket") or [""])[0], self.scope["url_route"]["kwargs"]["veid"],
                self.user, self.session_key, origin)
        except tickets.Denied as exc:
            await self.accept()
            await self._tell_and_close(Reason.REFUSED, exc.message)
            return
        await self.accept()
        row = self.row
        self.in_key, self.out_key = frames.keys(row.node, row.pk)
        self.sealer = frames.Sealer(row.relay_key, row.pk, frames.IN)
        self.push_lock = asyncio.Lock()
        now = time.monotonic()
        self.last_activity = self.last_node = self.opened_at = now
        self.next_alive, self.next_check = now + ALIVE_EVERY, now + settings.CONSOLE_RECHECK_SECONDS
        self.is_open = False
        await self._join(row)
        self.redis = bus.web_client()
        try:
            await sync_to_async(_start_relay, thread_sensitive=False)(row, *_size(query))
        except Exception as exc:  # no broker: nothing will answer
            log.warning("console %s: relay task not sent to %s: %s", row.pk, row.node, exc)
            await self._end(Reason.NODE, "the VPS's node cannot be reached; try again",
                            tell_node=False)
            return
        self.pump = asyncio.ensure_future(self._pump())

    async def _join(self, row):
        groups = [ending.ve_group(row.veid), ending.session_group(row.session_digest)]
        if row.customer_id is not None:  # staff's consoles stay when the customer is suspended
            groups.append(ending.customer_group(row.customer_id))
        for group in groups:
            try:
                await self.channel_layer.group_add(group, self.channel_name)
                self.joined.append(group)
            except Exception as exc:  # the recheck still closes it, a little later
                log.warning("console %s: not in group %s: %s", row.pk, group, exc)

    # -- browser -> node -------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self.ended or self.row is None:
            return
        if bytes_data is not None:
            self.last_activity = time.monotonic()
            for piece in frames.chunks(bytes_data):
                await self._push(frames.DATA, piece)
            return
        try:
            message = json.loads(text_data or "")
            if message.get("type") == "resize":
                rows, cols = int(message["rows"]), int(message["cols"])
                if 1 <= rows <= frames.MAX_SIZE and 1 <= cols <= frames.MAX_SIZE:
                    await self._push(frames.RESIZE, frames.resize_payload(rows, cols))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # not ours to act on: ignored

    async def _push(self, kind, payload=b""):
        """Seal and push one input frame (in order: numbers are counted under the lock)."""
        if self.ended:
            return
        async with self.push_lock:
            frame = self.sealer.seal(kind, payload)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pending, _ = await pipe.lpush(self.in_key, frame) \
                        .pexpire(self.in_key, bus.KEY_TTL_MS).execute()
            except Exception as exc:
                log.warning("console %s: input not passed on: %s", self.row.pk, exc)
                pending = None
        if pending is None:
            await self._end(Reason.NODE, "lost the connection to the relay", tell_node=False)
        elif pending > MAX_PENDING:
            await self._end(Reason.NODE, "the VPS's node does not keep up")

    # -- node -> browser -------------------------------------------------------------

    async def _pump(self):
        try:
            while not self.ended:
                got = await self.redis.brpop([self.out_key], timeout=bus.WAIT)
                now = time.monotonic()
                if got is not None:
                    self.last_node = now
                    kind, payload = self.sealer.open(got[1])
                    if await self._from_node(kind, payload, now):
                        return
                await self._timers(now)
        except asyncio.CancelledError:
            raise
        except frames.BadFrame as exc:
            log.warning("console %s: %s", self.row.pk, exc)
            await self._end(Reason.NODE, "the relay's frames were damaged")
        except Exception as exc:
            log.warning("console %s: relay failed: %s", self.row.pk, exc)
            await self._end(Reason.NODE, "lost the connection to the relay", tell_node=False)

    async def _from_node(self, kind, payload, now):
        """Act on one frame from the node; True when the session is over."""
        if kind == frames.DATA:
            self.last_activity = now
            await self.send(bytes_data=payload)
        elif kind == frames.OPEN:
            self.is_open = True
            await self.send(text_data=json.dumps({"type": "open"}))
        elif kind == frames.END:
            await self._end(Reason.ENDED, payload.decode(errors="replace") or
                            "the console ended", tell_node=False)
            return True
        elif kind == frames.ERROR:
            try:
                error = json.loads(payload)
            except ValueError:
                error = {}
            reason = Reason.ENDED if error.get("code") in ("not_found", "not_running") \
                else Reason.NODE
            await self._end(reason, str(error.get("message") or "the console cannot be opened"),
                            tell_node=False)
            return True
        return False

    async def _timers(self, now):
        if not self.is_open and now - self.opened_at > OPEN_TIMEOUT:
            await self._end(Reason.NODE, "the VPS's node did not answer; try again")
        elif now - self.last_node > NODE_SILENCE:
            await self._end(Reason.NODE, "the VPS's node stopped answering")
        elif now - self.last_activity > settings.CONSOLE_IDLE_SECONDS:
            minutes = round(settings.CONSOLE_IDLE_SECONDS / 60)
            await self._end(Reason.IDLE, f"closed after {minutes} minutes without use")
        else:
            if now >= self.next_alive:
                self.next_alive = now + ALIVE_EVERY
                await self._push(frames.ALIVE)
            if now >= self.next_check and not self.ended:
                self.next_check = now + settings.CONSOLE_RECHECK_SECONDS
                try:
                    await database_sync_to_async(tickets.recheck)(
                        self.row.pk, self.user.pk, self.session_key)
                except tickets.Denied as exc:
                    await self._end(exc.reason, exc.message)

    # -- ending ----------------------------------------------------------------------

    async def console_end(self, event):
        """Group message (ending.py): suspension, termination, signing out."""
        await self._end(event.get("reason") or Reason.REVOKED, event.get("message") or "")

    async def disconnect(self, code):
        if self.row is not None and not self.ended:
            await self._end(Reason.CLIENT, "closed by the user", close_socket=False)

    async def _end(self, reason, message, tell_node=True, close_socket=True):
        """End the session once: tell the node, record it, leave the groups, close."""
        if self.ended:
            return
        self.ended = True
        if tell_node:
            try:
                async with self.push_lock:
                    frame = self.sealer.seal(frames.CLOSE, str(reason).encode())
                    await asyncio.wait_for(self.redis.lpush(self.in_key, frame), 2)
            except Exception as exc:  # the node ends by itself once we stop talking
                log.info("console %s: the node was not told: %s", self.row.pk, exc)
        try:
            await database_sync_to_async(tickets.close)(self.row.pk, reason, message)
        except Exception:
            log.exception("console %s: its end was not recorded", self.row.pk)
        log.info("console %s of VPS %s by %s closed: %s (%s)", self.row.pk, self.row.veid,
                 self.row.username, reason, message)
        for group in self.joined:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:
                pass  # a group forgets silent members by itself
        if self.pump is not None and self.pump is not asyncio.current_task():
            self.pump.cancel()
        if self.redis is not None:
            try:
                await self.redis.aclose()
            except Exception:
                pass
        if close_socket:
            await self._tell_and_close(reason, message)

    async def _tell_and_close(self, reason, message):
        await self.send(text_data=json.dumps({"type": "closed", "reason": str(reason),
                                              "message": message}))
        await self.close(code=CLOSE_CODES.get(reason, 4500),
                         reason=message.encode()[:120].decode(errors="ignore"))


def _start_relay(row, rows, cols):
    """Send the relay task to the node's console queue (signed, short-lived)."""
    from hosting.operations import dispatch
    from hosting.nodes.models import Node
    dispatch.publish(RELAY_TASK, [row.node, str(row.pk), rows, cols],
                     Node(name=row.node).console_queue, expires=OPEN_TIMEOUT - 2)
