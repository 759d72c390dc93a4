"""Actual state of VEs on this node: the init's identity and the per-VE lock.

The run file records the init's PID with its start time and the boot id. It
is only a hint: a PID is trusted only while a live process with that start
time exists in this boot, so after a crash or reboot the truth is read from
the kernel, not from the file.
"""

import contextlib
import errno
import fcntl
import json
import os
import time
from collections import namedtuple

from .fsutil import atomic_write
from .errors import StateError
from .kernel import proc


class InitRecord(namedtuple("InitRecord", "pid start_time boot_id netns watched console",
                            defaults=(None, False, False))):
    """Identity of a running VE's init process; the network namespace its host
    side lives in (``kernel.netns.identity``; None in run files from before);
    ``watched``: the node watcher holds its seccomp notifier, so it sees a
    reboot or power-off from inside (an end without one is a crash);
    ``console``: its /dev/console is a terminal the watcher holds the other end of."""

    __slots__ = ()

    def is_alive(self):
        """Tell whether this very process still runs (not a reused PID)."""
        return self.boot_id == proc.boot_id() and proc.is_alive(self.pid, self.start_time)


def record_init(path, pid, netns=None, watched=False, console=False):
    """Write the run file for a freshly started init; return the record."""
    record = InitRecord(pid, proc.start_time(pid), proc.boot_id(), netns, watched, console)
    # Not fsync'ed: after a crash the file is distrusted and checked anyway.
    atomic_write(path, json.dumps(record._asdict()) + "\n", durable=False)
    return record


def read_init(path):
    """Return the InitRecord in ``path`` or None (missing or unreadable)."""
    try:
        with open(path) as handle:
            return InitRecord(**json.load(handle))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def forget_init(path):
    """Remove a run file; a missing one is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def locked(path, veid, timeout):
    """Hold the VE's exclusive lock for one action, waiting up to ``timeout`` s.

    Yields a ``LockHold``; set its ``remove`` when the VE is gone (destroy, a
    failed create) so no lock file outlives it. flock is released by the
    kernel when the holder dies, so a killed CLI or worker never leaves a VE
    locked; a waiter that locked a file since deleted notices the inode
    changed and locks the path again.
    """
    deadline = time.monotonic() + timeout
    while True:
        fd = _lock_fd(path, veid, deadline)
        if _still_linked(fd, path):
            break
        os.close(fd)
    hold = LockHold()
    try:
        yield hold
    finally:
        if hold.remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)


class LockHold:
    """What the holder of a VE lock may decide about the lock file."""

    remove = False


def _lock_fd(path, veid, deadline):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
        if time.monotonic() >= deadline:
            os.close(fd)
            raise StateError("another action on this VE is in progress", veid)
        time.sleep(0.02)


def _still_linked(fd, path):
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
