"""The node's end of a console (root, in the node's console worker): engine <-> Redis.

``run`` is the whole relay of one session. It takes the session once (its row's
``relay_started``: a replayed or late message finds it taken and does nothing;
a console is never redelivered), reads the VE and the session's key from the
database (the message carries only the node's name, the session id and the
terminal size), opens the VE's console with the engine and then bridges:

- a reader thread waits on the console's socket and pushes each piece of
  output as a sealed frame to ``console:<node>:<session>:out``, at once;
- this thread takes input frames from ``...:in`` with BRPOP and writes
  keystrokes to the console, applies resizes, and ends on the web side's
  CLOSE, on its silence (it says ALIVE every few seconds) or when the console
  ends (the VE stopped: the engine's recv gives b"").

Flow control: when the web side falls behind (its list holds OUT_HIGH frames)
the reader stops reading the console until the list drains, so a flood of
output waits in the console, not in Redis.
"""

import json
import logging
import select
import threading
import time
from datetime import timedelta

from django.db import close_old_connections, connection
from django.utils import timezone
from ve.errors import NotFound, StateError, VEError

from . import bus, frames
from .models import ConsoleSession

log = logging.getLogger(__name__)
CLAIM_WITHIN = timedelta(seconds=30)  # a session opened longer ago is not the node's to take
WEB_SILENCE = 35.0  # the web side says ALIVE every 10 s: gone after this long without a word
ALIVE_EVERY = 10.0
OUT_HIGH, OUT_LOW = 256, 64  # frames waiting for the web side: stop reading / read again
WRITE_TIMEOUT = 10.0  # the console takes no input for this long: give up
READ_BYTES = 65536


class _Ended(Exception):
    """The session is over, for the reason given."""


def claim(node_name, session_id):
    """(veid, relay key) of session ``session_id`` if this node may take its relay now
    (once); None otherwise. Touches only the columns nodes are granted (nodedb.py)."""
    now = timezone.now()
    found = ConsoleSession.objects.filter(
        pk=session_id, node=node_name, opened__gte=now - CLAIM_WITHIN, closed__isnull=True,
        relay_started__isnull=True).values_list("environment__veid", "relay_key") \
        .order_by("pk").first()  # by a column nodes may read (the model orders by issued)
    if found is None or not found[1]:
        return None
    taken = ConsoleSession.objects.filter(pk=session_id, relay_started__isnull=True) \
        .update(relay_started=now)
    return (found[0], bytes(found[1])) if taken else None


def run(node_name, session_id, rows, cols, eng=None, client=None):
    """Relay session ``session_id`` until it ends; returns why it ended (for the log)."""
    close_old_connections()
    try:
        claimed = claim(node_name, session_id)
    finally:
        connection.close()  # held for hours otherwise, by a thread of the pool
    if claimed is None:
        log.warning("console %s: not taken (unknown, taken already, closed or too old)",
                    session_id)
        return "not taken"
    veid, key = claimed
    if eng is None:
        from hosting.operations.executor import engine
        eng = engine()
    relay = _Relay(session_id, key, frames.keys(node_name, session_id),
                   client or bus.node_client())
    try:
        conn = eng.console(veid, rows=int(rows), cols=int(cols))
    except NotFound:
        relay.error("not_found", f"VPS {veid} is not on this node")
        return "no such VE"
    except StateError as exc:
        relay.error("not_running", exc.message or "the VPS is not running")
        return "not running"
    except (VEError, OSError) as exc:  # the watcher's socket failed us
        log.warning("console of VE %s could not be opened: %s", veid, exc)
        relay.error("failed", "the console could not be opened")
        return "failed"
    log.info("console %s of VE %s opened (%sx%s)", session_id, veid, rows, cols)
    try:
        why = relay.bridge(conn)
    finally:
        conn.close()
    log.info("console %s of VE %s ended: %s", session_id, veid, why)
    return why


class _Relay:
    def __init__(self, session_id, key, keys, client):
        self.sealer = frames.Sealer(key, session_id, frames.OUT)
        self.in_key, self.out_key = keys
        self.redis = client
        self.lock = threading.Lock()  # frame numbers and list order agree
        self.finished = False  # END or ERROR sent: nothing follows
        self.console_ended = threading.Event()
        self.stop = threading.Event()

    def push(self, kind, payload=b"", last=False):
        """Seal and push one frame; returns how many wait for the web side."""
        with self.lock:
            if self.finished:
                return 0
            self.finished = last
            frame = self.sealer.seal(kind, payload)
            pending, _ = self.redis.pipeline(transaction=False).lpush(self.out_key, frame) \
                .pexpire(self.out_key, bus.KEY_TTL_MS).execute()
            return pending

    def error(self, code, message):
        self.push(frames.ERROR, json.dumps({"code": code, "message": message}).encode(),
                  last=True)

    def bridge(self, conn):
        self.push(frames.OPEN)
        reader = threading.Thread(target=self._read, args=(conn,), daemon=True,
                                  name=f"console-{self.out_key}")
        reader.start()
        try:
            why = self._write(conn)
        except _Ended as exc:
            why = str(exc)
        except frames.BadFrame as exc:
            why = f"refused input: {exc}"
        except Exception as exc:  # Redis gone: the web side sees us fall silent
            log.warning("console relay %s failed: %s", self.in_key, exc)
            why = f"failed: {exc}"
        self.stop.set()
        reader.join(2)
        try:
            if self.console_ended.is_set():
                self.push(frames.END, b"the console ended (the VPS stopped or rebooted)",
                          last=True)
            self.redis.delete(self.in_key)
        except Exception:
            pass  # the lists expire by themselves
        return why

    def _read(self, conn):
        """Console -> web side, until the console ends or the session stops."""
        try:
            while not self.stop.is_set():
                ready, _, _ = select.select([conn.fileno()], [], [], 0.5)
                if not ready:
                    continue
                data = conn.recv(READ_BYTES)
                if not data:
                    self.console_ended.set()
                    return
                if self.push(frames.DATA, data) >= OUT_HIGH:
                    self._wait_for_web()
        except Exception as exc:
            if not self.stop.is_set():
                log.warning("console relay %s: reading failed: %s", self.out_key, exc)
                self.console_ended.set()

    def _wait_for_web(self):
        """Hold reading while the web side has a backlog (it catches up, or goes)."""
        while not self.stop.is_set() and self.redis.llen(self.out_key) > OUT_LOW:
            self.stop.wait(0.05)

    def _write(self, conn):
        """Web side -> console, until CLOSE, silence or the console's end."""
        last_web = time.monotonic()
        next_alive = last_web + ALIVE_EVERY
        while not self.console_ended.is_set():
            got = self.redis.brpop([self.in_key], timeout=bus.WAIT)
            now = time.monotonic()
            if got is not None:
                last_web = now
                kind, payload = self.sealer.open(got[1])
                if kind == frames.DATA:
                    _write_all(conn, payload)
                elif kind == frames.RESIZE:
                    conn.resize(*frames.parse_resize(payload))
                elif kind == frames.CLOSE:
                    return f"closed by the web side ({payload.decode(errors='replace')})"
            if now - last_web > WEB_SILENCE:
                return "the web side went silent"
            if now >= next_alive:
                next_alive = now + ALIVE_EVERY
                self.push(frames.ALIVE)
        return "the console ended"


def _write_all(conn, data):
    """Write all of ``data`` to the console, waiting at most WRITE_TIMEOUT for room."""
    deadline = time.monotonic() + WRITE_TIMEOUT
    view = memoryview(data)
    while view:
        _, ready, _ = select.select([], [conn.fileno()], [], max(0, deadline - time.monotonic()))
        if not ready:
            raise _Ended("the console takes no input")
        sent = conn.send(bytes(view))
        view = view[len(view) if sent is None else sent:]
