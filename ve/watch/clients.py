"""The watcher's socket: starting VEs hand over their notifiers; a new watcher takes over.

Clients are root processes of the node (the socket is in VE_ROOT/run, mode
0600): the engine starting a VE or running a command in one (``adopt``,
with the seccomp listener and the master of its console terminal if it has
one, see ``consoles.py``), the engine restoring a VE (``restore``, see
``restores.py``), anyone asking whether a watcher runs (``ping``,
``status``), and a new watcher taking the node over (``handover``: every
listener, then this watcher stops).
"""

import json
import os
import socket

from .. import state
from . import holder
from ..log import get as get_logger

log = get_logger(__name__)

HANDOVER_BATCH = 200       # listeners per message (SCM_RIGHTS takes at most 253)


class ClientsMixin:
    """The socket half of the Watcher (needs ``_listen``, ``_watch`` and its sets)."""

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except BlockingIOError:
                return
            kept = False
            try:
                conn.settimeout(2.0)
                kept = self._serve_client(conn)
            except (OSError, ValueError) as exc:
                log.warning("a client of the watcher failed: %s", exc)
            finally:
                if not kept:
                    conn.close()

    def _serve_client(self, conn):
        """Answer one client; True if ``conn`` was handed on (a restore answers later)."""
        message, fds, _, _ = socket.recv_fds(conn, 65536, 4)
        try:
            request = json.loads(message or b"{}")
            if request.get("op") == "handover":
                return self._hand_over(conn)
            if request.get("op") == "restore":
                self._take_restore(conn, request)
                return True
            reply = self._handle(request, fds)
            kept = reply.pop("_kept", ())
            fds = [fd for fd in fds if fd not in kept]
        finally:
            for fd in fds:
                os.close(fd)
        conn.send(json.dumps(reply).encode())
        return False

    def _handle(self, request, fds):
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "adopt" and len(fds) == 1 + bool(request.get("console")):
            veid = int(request["veid"])
            init = (int(request["pid"]), int(request["start_time"]))
            self._listen(veid, fds[0], init)
            if len(fds) == 2:
                self._keep_console(veid, fds[1], init)
            record = state.read_init(self.layout.state(veid))
            if veid not in self.ves and veid not in self.busy and record is not None \
                    and (record.pid, record.start_time) == init:
                self._watch(veid, record)  # a new VE: its end must not slip by a rescan
            return {"ok": True, "_kept": fds[:2]}
        if op == "status":
            return {"ok": True, "ves": sorted(self.ves), "listeners": len(self.listeners),
                    "reaping": sorted(self.busy), "deaf": self._deaf()}
        if op == "stop":  # everything, the twin too (vectl watch --stop)
            self.stop(everything=True)
            return {"ok": True, "pid": os.getpid()}
        return {"ok": False, "error": f"bad request {op!r}"}

    def _hand_over(self, conn):
        """A new watcher takes the node over: give it every listener and console master,
        then stop."""
        held = [(listener.fd, [listener.veid, *listener.init, holder.LISTENER])
                for listener in self.listeners.values()]
        held += [(kept.master, [veid, *kept.init, holder.CONSOLE])
                 for veid, kept in self.consoles.items()]
        conn.send(json.dumps({"ok": True, "count": len(held)}).encode())
        for start in range(0, len(held), HANDOVER_BATCH):
            batch = held[start:start + HANDOVER_BATCH]
            socket.send_fds(conn, [json.dumps([item for _, item in batch]).encode()],
                            [fd for fd, _ in batch])
        log.info("a new watcher takes the node over (%s descriptors)", len(held))
        self.handed_over = self.stopping = True

    def _deaf(self):
        """Running VEs started with a notifier whose listener no watcher holds any more
        (a watcher and its twin were killed at once): their sysinfo(2) and reboot(2)
        fail until they are restarted."""
        held = {(listener.veid, listener.init) for listener in self.listeners.values()}
        return sorted(veid for veid, w in self.ves.items() if w.record.watched
                      and (veid, (w.record.pid, w.record.start_time)) not in held)
