"""The program that starts a VE's init (``spawn_init.c``), built from this checkout.

Built once per version of its source into ``var/spawn/`` of the checkout (by
``make deps``, or by the first start that finds it missing), under a name
that carries a checksum of the source and the compiler's flags: an edited source
gets a new binary,
and a process never runs one built from other code.
"""

import os
import zlib

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spawn_init.c")
BUILD_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(SOURCE))),
                         "var", "spawn")
# Static: the program needs nothing of the node's shared libraries at run time (it
# starts no faster than a dynamic build: measured, bench/README.md).
COMPILER = ("cc", "-O2", "-static", "-Wall", "-Wextra", "-Werror")

# Source path -> its binary, found once per process: no read of the source at every
# start, and a long-running worker keeps the program of the source it began with,
# which speaks the hand-shake of the Python it loaded then.
_known = {}


def path():
    """The program's path, built first if this version of the source has no binary.

    OSError (with the compiler's messages) if it cannot be built.
    """
    if SOURCE not in _known:
        with open(SOURCE, "rb") as handle:
            source = handle.read() + " ".join(COMPILER).encode()
        key = f"{zlib.crc32(source):08x}-{len(source)}"
        binary = os.path.join(BUILD_DIR, f"ve-spawn-{key}")
        if not os.access(binary, os.X_OK):
            _build(binary)
        _known[SOURCE] = binary
    return _known[SOURCE]


def _build(binary):
    """Compile into a temporary name and rename: concurrent builds are harmless."""
    import subprocess  # here: a start that finds its binary never loads it
    os.makedirs(BUILD_DIR, mode=0o755, exist_ok=True)
    temporary = f"{binary}.{os.getpid()}.tmp"
    try:
        result = subprocess.run([*COMPILER, "-o", temporary, SOURCE],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as exc:
        raise OSError(f"cannot build the VE spawner: no C compiler ({exc})") from exc
    if result.returncode != 0:
        raise OSError(f"cannot build the VE spawner: {result.stderr.strip()[-2000:]}")
    os.chmod(temporary, 0o755)
    os.rename(temporary, binary)
