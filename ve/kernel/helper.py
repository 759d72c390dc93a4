"""Run a function of ours in a forked helper process, with a timeout and a bounded reply.

Used wherever the engine must act in another process's namespaces or may
block on something a VE controls: setns into a mount or user namespace
refuses a multi-threaded caller (a node worker has threads), and a file on a
stuck filesystem (a hung FUSE mount, say) must never hold the caller, or the
VE's lock, past ``timeout``. The helper keeps none of the caller's
descriptors but the ones named, and its reply is JSON of at most ``limit``
bytes.
"""

import errno
import json
import os
import select
import signal
import time

RESULT_LIMIT = 1 << 20


def run(func, args=(), keep=(), timeout=10.0, limit=RESULT_LIMIT):
    """Return ``func(*args)`` (JSON-able) computed in a forked helper.

    ``keep``: descriptors the helper may use (all others are closed first).
    Raises OSError with the helper's errno and message if ``func`` raised
    one, ETIMEDOUT if it did not finish in time (it is killed), EFBIG if its
    answer is too long.
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        _child(func, args, set(keep) | {write_end}, write_end)
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
    raise OSError(int(code) if code.isdigit() else errno.EIO, message or "the helper died")


def _child(func, args, keep, out):
    """Body of the helper; never returns."""
    try:
        for fd in _open_fds():
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        reply = b"ok\n" + json.dumps(func(*args)).encode()
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        reply = f"error\n{exc.errno or errno.EIO} {where}{exc.strerror or exc}".encode()
    except BaseException as exc:
        reply = f"error\n{errno.EIO} {exc.__class__.__name__}: {exc}".encode()
    try:
        view = memoryview(reply)
        while view:
            view = view[os.write(out, view):]
    finally:
        os._exit(0)


def _open_fds():
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return range(3, 1024)


def _read_reply(pid, fd, timeout, limit):
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            _kill(pid)  # waits on FUSE or NFS are killable
            raise OSError(errno.ETIMEDOUT, f"no answer within {timeout:g} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            _kill(pid)
            raise OSError(errno.EFBIG, "the helper's answer is too long")


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid, timeout=2.0):
    """Collect the helper; one stuck in the kernel past ``timeout`` is left as a zombie
    for a later wait rather than holding the caller."""
    deadline = time.monotonic() + timeout
    while not os.waitpid(pid, os.WNOHANG)[0] and time.monotonic() < deadline:
        time.sleep(0.005)
