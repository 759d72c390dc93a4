"""Run a function of ours inside a running VE's mount namespace, as its root.

The host never executes a program from a VE to change the VE's files (a VE
root may have replaced any of them). Instead a forked copy of the caller
joins the VE's user and mount namespaces through its init's pidfd, takes VE
root's identity (the kernel then checks every access as it would VE root's),
runs a function of this code base, and reports its result over a pipe. Paths
that function opens are resolved inside the VE (``vefiles``).

The caller waits at most ``timeout`` seconds and reads at most ``limit``
bytes of result; a helper that hangs (a file on a stuck filesystem, say) is
killed, so no lock is ever held past the timeout.
"""

import errno
import json
import os
import select
import signal
import time

from . import libc

PR_SET_DUMPABLE = 4
RESULT_LIMIT = 1 << 20


def call(pidfd, userns, func, args=(), timeout=10.0, limit=RESULT_LIMIT):
    """Return ``func(*args)`` run in the VE of init ``pidfd`` (JSON-able values only).

    ``userns``: the VE has a user namespace (its root is not host root).
    Raises OSError with the helper's errno and message if ``func`` raised
    one, or ETIMEDOUT if it did not finish in time.
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _run_helper(pidfd, userns, func, args, write_end)
    os.close(write_end)
    try:
        reply = _read_reply(pid, read_end, timeout, limit)
    finally:
        os.close(read_end)
        _reap(pid)
    status, _, payload = reply.partition(b"\n")
    if status == b"ok":
        return json.loads(payload)
    code, _, message = payload.decode(errors="replace").partition(" ")
    raise OSError(int(code) if code.isdigit() else errno.EIO, message or "the helper failed")


def _run_helper(pidfd, userns, func, args, out):
    """Body of the forked helper; never returns."""
    try:
        libc.setns(pidfd, libc.CLONE_NEWNS | (libc.CLONE_NEWUSER if userns else 0))
        # Of the caller's descriptors (a worker's sockets, say) only the reply pipe stays.
        os.closerange(3, out)
        libc.close_fds_from(out + 1)
        if userns:
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        # Not even VE root may attach to this copy of a host process.
        libc.prctl(PR_SET_DUMPABLE, 0)
        os.chdir("/")
        reply = b"ok\n" + json.dumps(func(*args)).encode()
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        reply = f"error\n{exc.errno or errno.EIO} {where}{exc.strerror or exc}".encode()
    except BaseException as exc:
        reply = f"error\n{errno.EIO} {exc.__class__.__name__}: {exc}".encode()
    try:
        _write_all(out, reply)
    finally:
        os._exit(0)


def _read_reply(pid, fd, timeout, limit):
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            _kill(pid)
            raise OSError(errno.ETIMEDOUT, f"no answer from inside the VE within {timeout:g} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            _kill(pid)
            raise OSError(errno.EFBIG, "the answer from inside the VE is too long")


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid, timeout=2.0):
    """Collect the helper; one stuck in the kernel past ``timeout`` is left as a zombie
    for a later wait rather than holding the caller."""
    deadline = time.monotonic() + timeout
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.005)
