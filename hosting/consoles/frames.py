"""The frames a console's two halves exchange through Redis, sealed.

Redis only carries them: the web side pushes input frames to
``console:<node>:<session>:in``, the node's relay pushes output frames to
``console:<node>:<session>:out`` (``keys``). Keystrokes include passwords typed
at a login prompt and output whatever the VE prints, so neither may be readable
or forgeable by whoever reads Redis (docs/security.md: the control plane assumes
breach). Each frame is AES-256-GCM with the session's key, which lives only in
the database row (``ConsoleSession.relay_key``), never in a message; the nonce
is the direction and the frame's number, counted by both ends and never sent,
so a dropped, replayed, reordered or foreign frame fails to open and ends the
session.

A frame's plain text is one type byte and its payload:

=====  ==========  ===============================================
dir    type        payload
=====  ==========  ===============================================
in     ``d`` DATA   bytes typed or pasted
in     ``r`` RESIZE rows, cols (two unsigned 16-bit, big-endian)
in/out ``k`` ALIVE  nothing: "still here" while nothing else moves
in     ``c`` CLOSE  the reason (text): the web side is done
out    ``o`` OPEN   nothing: the node has the console
out    ``d`` DATA   console output
out    ``e`` END    the reason (text): the console ended
out    ``x`` ERROR  JSON {"code", "message"}: it could not be opened
=====  ==========  ===============================================
"""

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA, RESIZE, ALIVE, CLOSE, OPEN, END, ERROR = b"d", b"r", b"k", b"c", b"o", b"e", b"x"
IN, OUT = b"i", b"o"  # web -> node, node -> web
KEY_BYTES = 32
MAX_DATA = 16 << 10  # bytes of data per frame (bigger input is cut into several)
MAX_SIZE = 1000  # rows or cols at most (a 4K screen in a small font is ~500 x 250)
_RESIZE = struct.Struct("!HH")


class BadFrame(Exception):
    """A frame that does not open with the key and number expected, or makes no sense."""


def new_key():
    return os.urandom(KEY_BYTES)


def keys(node, session_id):
    """(input list, output list) of a session relayed by ``node``. The node's Redis user
    may touch ``console:<its name>:*`` only (hosting.controlplane.acl_rules)."""
    base = f"console:{node}:{session_id}"
    return f"{base}:in", f"{base}:out"


class Sealer:
    """Seals the frames one end sends in ``direction`` and opens those it receives.

    Not thread-safe: each end sends from one place at a time (a lock around
    ``seal`` and the push keeps numbers and list order the same)."""

    def __init__(self, key, session_id, direction):
        self._aead = AESGCM(bytes(key))
        self._aad = str(session_id).encode()
        self._send_dir = direction
        self._recv_dir = OUT if direction == IN else IN
        self._sent = self._received = 0

    @staticmethod
    def _nonce(direction, number):
        return direction + b"\0" * 3 + number.to_bytes(8, "big")

    def seal(self, kind, payload=b""):
        frame = self._aead.encrypt(self._nonce(self._send_dir, self._sent), kind + payload,
                                   self._aad)
        self._sent += 1
        return frame

    def open(self, frame):
        """(type, payload) of the next frame received; BadFrame if it is not that."""
        try:
            plain = self._aead.decrypt(self._nonce(self._recv_dir, self._received),
                                       bytes(frame), self._aad)
        except InvalidTag:
            raise BadFrame("a frame did not open (lost, replayed or forged)") from None
        self._received += 1
        if not plain:
            raise BadFrame("an empty frame")
        return plain[:1], plain[1:]


def resize_payload(rows, cols):
    return _RESIZE.pack(rows, cols)


def parse_resize(payload):
    """(rows, cols) of a RESIZE payload, each within 1..MAX_SIZE; BadFrame otherwise."""
    if len(payload) != _RESIZE.size:
        raise BadFrame("a resize frame of the wrong size")
    rows, cols = _RESIZE.unpack(payload)
    if not (1 <= rows <= MAX_SIZE and 1 <= cols <= MAX_SIZE):
        raise BadFrame("a terminal size out of range")
    return rows, cols


def chunks(data, size=MAX_DATA):
    """``data`` cut into pieces of at most ``size`` bytes (none for b"")."""
    return [data[i:i + size] for i in range(0, len(data), size)]
