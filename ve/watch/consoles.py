"""The VEs' consoles in the watcher: each console's master drained, and served to clients.

A VE started with a console (``kernel/console.py``) hands the master of its
terminal to the watcher with its notifier. The watcher reads it all the time,
so the VE never blocks writing to /dev/console, and keeps the last BACKLOG
bytes (boot messages, the login prompt) for whoever attaches next. Clients
(``vectl console``, the dashboard's relay; root only: the socket is in
VE_ROOT/run, mode 0600) connect to ``console.sock``:

- the client sends one JSON line: {"veid": N, "rows": R, "cols": C};
- the watcher answers one JSON line ({"ok": true} or {"ok": false, "error"}),
  then the backlog, then the console's output as it comes;
- the client sends frames: b"d" + 4-byte length + the bytes typed, or b"r" +
  4-byte length (4) + rows and columns (2 bytes each): a new window size.

Several clients may attach at once (all see the output, all may type), like a
serial console. A client that cannot keep up loses its connection, never the
VE its output. The connection ends when the VE's init does.
"""

import errno
import json
import os
import select
import socket
import struct

from ..kernel import console as terminal
from ..log import get as get_logger
from . import holder

log = get_logger(__name__)

SOCKET_NAME = "console.sock"
BACKLOG = 64 * 1024        # bytes of recent output kept per console
CLIENT_BUFFER = 1 << 20    # output queued for a slow client before it is dropped
HEADER_MAX = 4096
FRAME = struct.Struct(">cI")


class Console:
    """One VE's console as the watcher holds it."""

    def __init__(self, veid, master, init):
        self.veid, self.master, self.init = veid, master, init
        try:  # held so the master never hangs up while nothing in the VE has it open
            self.peer = terminal.peer(master)
        except OSError:
            self.peer = None
        self.backlog = bytearray()
        self.clients = set()

    def close(self):
        for fd in (self.master, self.peer):
            if fd is not None:
                os.close(fd)


class Client:
    """A connection on the console socket: first its header, then frames."""

    def __init__(self, sock):
        self.sock = sock
        self.console = None
        self.inbox = bytearray()
        self.outbox = bytearray()


class ConsolesMixin:
    """The console half of the Watcher (needs ``_add``, ``_remove``, ``poller``)."""

    def _start_consoles(self):
        path = self.layout.run_dir / SOCKET_NAME
        try:
            os.unlink(path)  # left by a watcher that died: we hold the node's lock
        except FileNotFoundError:
            pass
        self.console_server = socket.socket(socket.AF_UNIX,
                                            socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.console_server.bind(str(path))
        os.chmod(path, 0o600)
        self.console_server.listen(64)
        self.console_server.setblocking(False)
        self._add(self.console_server.fileno(), lambda _: self._console_accept())

    def _stop_consoles(self):
        for veid in list(self.consoles):
            self._drop_console(veid)
        server, self.console_server = self.console_server, None
        if server is not None:
            self._remove(server.fileno())
            try:
                os.unlink(self.layout.run_dir / SOCKET_NAME)
            except FileNotFoundError:
                pass
            server.close()

    def _keep_console(self, veid, master, init):
        """Take VE ``veid``'s console master (its init is ``init``)."""
        self._drop_console(veid)  # an earlier run's
        os.set_blocking(master, False)
        os.set_inheritable(master, False)
        kept = self.consoles[veid] = Console(veid, master, tuple(init))
        self._add(master, lambda events: self._console_output(kept, events))
        if self.holder is not None:
            self.holder.keep(master, veid, init, holder.CONSOLE)

    def _drop_console(self, veid, init=None):
        """Forget VE ``veid``'s console (of its init ``init`` only, if given: a new run's
        console stays): its clients see the end."""
        kept = self.consoles.get(veid)
        if kept is None or (init is not None and tuple(kept.init) != tuple(init)):
            return
        del self.consoles[veid]
        self._remove(kept.master)
        for client in list(kept.clients):
            self._console_hang_up(client)
        kept.close()

    def _console_output(self, kept, events):
        while True:
            try:
                data = os.read(kept.master, 65536)
            except BlockingIOError:
                return
            except OSError as exc:  # EIO: no terminal end open any more (no peer held)
                if exc.errno != errno.EIO:
                    log.warning("VE %s: console read failed: %s", kept.veid, exc)
                self._remove(kept.master)
                return
            if not data:
                return
            kept.backlog += data
            del kept.backlog[:-BACKLOG]
            for client in list(kept.clients):
                self._console_send(client, data)

    # -- clients ---------------------------------------------------------------

    def _console_accept(self):
        while True:
            try:
                sock, _ = self.console_server.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            client = Client(sock)
            self._add(sock.fileno(), lambda events, c=client: self._console_client(c, events))

    def _console_client(self, client, events):
        if events & select.EPOLLOUT:
            self._console_flush(client)
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._console_hang_up(client)
            return
        client.inbox += data
        if client.console is None:
            self._console_header(client)
        else:
            self._console_frames(client)

    def _console_header(self, client):
        line, newline, rest = bytes(client.inbox).partition(b"\n")
        if not newline:
            if len(client.inbox) > HEADER_MAX:
                self._console_refuse(client, "header too long")
            return
        try:
            asked = json.loads(line)
            veid, rows, cols = int(asked["veid"]), int(asked.get("rows", 24)), \
                int(asked.get("cols", 80))
        except (ValueError, KeyError, TypeError):
            self._console_refuse(client, "bad header")
            return
        kept = self.consoles.get(veid)
        if kept is None:
            self._console_refuse(client, f"VE {veid} has no console (not running, or "
                                         "started without one)")
            return
        client.console = kept
        kept.clients.add(client)
        client.inbox = bytearray(rest)
        self._console_resize(kept, rows, cols)
        self._console_send(client, b'{"ok": true}\n' + bytes(kept.backlog))
        self._console_frames(client)

    def _console_frames(self, client):
        while len(client.inbox) >= FRAME.size:
            kind, length = FRAME.unpack_from(client.inbox)
            if length > 65536:
                self._console_hang_up(client)
                return
            if len(client.inbox) < FRAME.size + length:
                return
            payload = bytes(client.inbox[FRAME.size:FRAME.size + length])
            del client.inbox[:FRAME.size + length]
            if kind == b"d":
                self._console_type(client.console, payload)
            elif kind == b"r" and length == 4:
                self._console_resize(client.console, *struct.unpack(">HH", payload))

    def _console_type(self, kept, data):
        try:
            written = os.write(kept.master, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            log.info("VE %s: console input lost: %s", kept.veid, exc)
            return
        if written < len(data):  # the VE reads none of its console: typing is not queued
            log.info("VE %s: %s bytes of console input dropped", kept.veid,
                     len(data) - written)

    def _console_resize(self, kept, rows, cols):
        if 0 < rows <= 1000 and 0 < cols <= 1000:
            try:
                terminal.set_size(kept.master, rows, cols)
            except OSError as exc:
                log.info("VE %s: console not resized: %s", kept.veid, exc)

    def _console_send(self, client, data):
        client.outbox += data
        if len(client.outbox) > CLIENT_BUFFER:
            log.info("VE %s: a console client fell behind; it is dropped",
                     client.console.veid if client.console else "?")
            self._console_hang_up(client)
            return
        self._console_flush(client)

    def _console_flush(self, client):
        try:
            while client.outbox:
                sent = client.sock.send(client.outbox)
                del client.outbox[:sent]
        except BlockingIOError:
            pass
        except OSError:
            self._console_hang_up(client)
            return
        wanted = select.EPOLLIN | (select.EPOLLOUT if client.outbox else 0)
        try:
            self.poller.modify(client.sock.fileno(), wanted)
        except OSError:
            pass

    def _console_refuse(self, client, why):
        try:
            client.sock.send(json.dumps({"ok": False, "error": why}).encode() + b"\n")
        except OSError:
            pass
        self._console_hang_up(client)

    def _console_hang_up(self, client):
        if client.console is not None:
            client.console.clients.discard(client)
        if client.sock.fileno() >= 0:
            self._remove(client.sock.fileno())
            client.sock.close()

