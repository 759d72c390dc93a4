"""The per-VE lock of a node worker: one operation per VE at a time on the node.

An flock on ``<NODE_RUN_DIR>/<veid>.lock``: the kernel drops it when its
holder dies, so a lock that can be taken while the database says an
operation is running proves that operation's worker is gone.
"""

import contextlib
import fcntl
import os
import time

from django.conf import settings


def _path(veid):
    os.makedirs(settings.NODE_RUN_DIR, mode=0o700, exist_ok=True)
    return os.path.join(settings.NODE_RUN_DIR, f"{int(veid)}.lock")


@contextlib.contextmanager
def ve_lock(veid, wait=True, timeout=3600.0):
    """Hold VE ``veid``'s worker lock; yield False at once if ``wait`` is False and it is taken."""
    fd = os.open(_path(veid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"VE {veid} stayed locked for {timeout:.0f} s") from None
                time.sleep(0.1)
        yield True
    finally:
        os.close(fd)
