"""Copy bytes between the caller and a command running inside a VE."""

import errno
import fcntl
import os
import selectors
import signal
import struct
import termios
import time
import tty

from .attach import exit_code


def pump_pipes(pid, stdin_w, stdout_r, stderr_r, input_data=b"", stdout=None, stderr=None,
               timeout=None, limit=None):
    """Feed ``input_data``, copy output to the binary streams (or capture it).

    Return (exit code, captured stdout bytes, captured stderr bytes); a stream
    passed in receives the data instead of the capture. Returns once the
    command has exited and its output is drained, even if a background
    process it started still holds the pipes (as vzctl exec does).

    ``timeout`` (seconds) and ``limit`` (bytes captured per stream) bound the
    caller's wait and memory: past either, the helper is killed (the command
    with it) and OSError ETIMEDOUT or EFBIG is raised.
    """
    pump = _PipePump(stdin_w, input_data, {stdout_r: stdout, stderr_r: stderr}, limit)
    pidfd = os.pidfd_open(pid)
    try:
        failure = pump.run(pidfd, None if timeout is None else time.monotonic() + timeout)
    finally:
        os.close(pidfd)
        pump.close()
    if failure:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if failure == "timeout":
        raise OSError(errno.ETIMEDOUT, f"still running after {timeout:g} s: killed")
    if failure == "limit":
        raise OSError(errno.EFBIG, f"more than {limit} bytes of output: killed")
    return exit_code(status), bytes(pump.captured[stdout_r]), bytes(pump.captured[stderr_r])


class _PipePump:
    """Moves input and output through non-blocking pipes with one selector."""

    def __init__(self, stdin_w, data, sinks, limit=None):
        self.pending = memoryview(data or b"")
        self.sinks = sinks
        self.limit = limit
        self.captured = {fd: bytearray() for fd in sinks}
        self.selector = selectors.DefaultSelector()
        for fd in sinks:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ)
        self.stdin_w = stdin_w
        if self.pending:
            os.set_blocking(stdin_w, False)
            self.selector.register(stdin_w, selectors.EVENT_WRITE)
        else:
            self._close_stdin()

    def run(self, pidfd, deadline=None):
        """Pump until the command exits; return None, or "timeout" / "limit"."""
        self.selector.register(pidfd, selectors.EVENT_READ)
        exited = False
        while len(self.selector.get_map()) > 1 and not exited:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = self.selector.select(wait)
            if not events and deadline is not None and time.monotonic() >= deadline:
                return "timeout"
            for key, _ in events:
                if key.fd == pidfd:
                    exited = True
                elif key.fd == self.stdin_w:
                    self._write_input()
                else:
                    self._read_output(key.fd)
                    if self._over_limit():
                        return "limit"
        for fd in list(self.sinks):  # what the command wrote before it exited
            while fd in self.selector.get_map() and self._read_output(fd):
                if self._over_limit():
                    return "limit"
        return None

    def _over_limit(self):
        return self.limit is not None and any(len(c) > self.limit for c in self.captured.values())

    def _write_input(self):
        try:
            written = os.write(self.stdin_w, self.pending)
        except BrokenPipeError:
            written = len(self.pending)  # the command closed its stdin
        self.pending = self.pending[written:]
        if not self.pending:
            self._close_stdin()

    def _read_output(self, fd):
        """Move one chunk; True if one came (False at EOF or when nothing waits)."""
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if not chunk:
            self.selector.unregister(fd)
            return False
        if self.sinks[fd] is not None:
            self.sinks[fd].write(chunk)
            self.sinks[fd].flush()
        else:
            self.captured[fd] += chunk
        return True

    def _close_stdin(self):
        if self.stdin_w is not None:
            if self.stdin_w in self.selector.get_map():
                self.selector.unregister(self.stdin_w)
            os.close(self.stdin_w)
            self.stdin_w = None

    def close(self):
        self._close_stdin()
        self.selector.close()
        for fd in self.sinks:
            os.close(fd)


def pump_terminal(pid, master, stdin_fd=0, stdout_fd=1):
    """Relay the caller's terminal to a VE pty in raw mode; return the exit code."""
    restore = _make_raw(stdin_fd)
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(stdin_fd, master))
    _copy_winsize(stdin_fd, master)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(stdin_fd, selectors.EVENT_READ)
            selector.register(master, selectors.EVENT_READ)
            while _relay_once(selector, stdin_fd, stdout_fd, master):
                pass
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        restore()
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return exit_code(status)


def _relay_once(selector, stdin_fd, stdout_fd, master):
    for key, _ in selector.select():
        try:
            chunk = os.read(key.fd, 65536)
        except OSError:  # EIO: the last process on the pty has gone
            return False
        if key.fd == master:
            if not chunk:
                return False
            os.write(stdout_fd, chunk)
        elif chunk:
            os.write(master, chunk)
        else:
            selector.unregister(stdin_fd)
    return True


def _make_raw(fd):
    if not os.isatty(fd):
        return lambda: None
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # keep input typed ahead
    return lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _copy_winsize(src, dst):
    if os.isatty(src):
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
