"""The client side of the watcher's console socket (``consoles.py``): what
``Engine.console`` returns, and what ``vectl console`` and the dashboard's relay use."""

import json
import socket
import struct

from ..errors import StateError
from .consoles import FRAME, SOCKET_NAME

CONNECT_TIMEOUT = 5.0


class ConsoleConnection:
    """An attached console: ``recv`` its output (b"" once the VE's init ended),
    ``send`` what is typed, ``resize`` the terminal; ``fileno`` for select/poll."""

    def __init__(self, sock, veid):
        self.sock, self.veid = sock, veid

    def fileno(self):
        return self.sock.fileno()

    def recv(self, size=65536):
        return self.sock.recv(size)

    def send(self, data):
        for start in range(0, len(data), 65536):
            chunk = data[start:start + 65536]
            self.sock.sendall(FRAME.pack(b"d", len(chunk)) + chunk)

    def resize(self, rows, cols):
        self.sock.sendall(FRAME.pack(b"r", 4) + struct.pack(">HH", rows, cols))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(layout, veid, rows=24, cols=80):
    """Attach to VE ``veid``'s console through the node's watcher; StateError if it has
    none (stopped, started without one, or no watcher serves the node)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(str(layout.run_dir / SOCKET_NAME))
        except (FileNotFoundError, ConnectionRefusedError):
            raise StateError("no node watcher serves consoles here", veid) from None
        sock.sendall(json.dumps({"veid": veid, "rows": rows, "cols": cols}).encode() + b"\n")
        reply = _line(sock)
        answer = json.loads(reply or b"{}")
        if not answer.get("ok"):
            raise StateError(answer.get("error") or "the watcher refused the console", veid)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return ConsoleConnection(sock, veid)


def _line(sock):
    """One line, read byte by byte: what follows it is the console's and stays queued."""
    data = bytearray()
    while not data.endswith(b"\n") and len(data) < 4096:
        byte = sock.recv(1)
        if not byte:
            break
        data += byte
    return bytes(data)


ESCAPE = b"\x1d"  # Ctrl-]: leave the console (the VE's session goes on)


def attach(conn, stdin=0, stdout=1, quiet=3.0):
    """Relay ``conn`` to this process's terminal until the console ends, stdin ends, or
    Ctrl-] is typed. A terminal is put in raw mode (restored after) and its window size
    follows. Piped input is sent as it comes; once it ended, the relay stops after
    ``quiet`` seconds without output. Returns the reason: "ended", "detached", "input
    ended" or "quiet"."""
    import os
    import select
    import signal
    import termios
    import time
    import tty
    interactive = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if interactive else None
    resized = [interactive]

    def on_winch(*_):
        resized[0] = True

    previous = signal.signal(signal.SIGWINCH, on_winch) if interactive else None
    try:
        if interactive:
            tty.setraw(stdin)
        reading = [conn, stdin]
        last_output = time.monotonic()
        while True:
            if stdin not in reading and time.monotonic() - last_output > quiet:
                return "quiet"
            if resized[0]:
                resized[0] = False
                size = os.get_terminal_size(stdin)
                conn.resize(size.lines, size.columns)
            try:
                ready = select.select(reading, [], [], 0.5)[0]
            except InterruptedError:
                continue
            if conn in ready:
                data = conn.recv(65536)
                if not data:
                    return "ended"
                os.write(stdout, data)
                last_output = time.monotonic()
            if stdin in ready:
                typed = os.read(stdin, 4096)
                if not typed:
                    if interactive:
                        return "input ended"
                    reading = [conn]  # piped input is all sent: show what follows
                    continue
                if interactive and ESCAPE in typed:
                    conn.send(typed[:typed.index(ESCAPE)])
                    return "detached"
                conn.send(typed)
    finally:
        if interactive:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)
