"""Copy bytes between the caller and a command running inside a VE."""

import os
import selectors
import signal
import termios
import tty
import fcntl
import struct

from .kernel.attach import exit_code


def pump_pipes(pid, stdin_w, stdout_r, stderr_r, input_data=b"", stdout=None, stderr=None):
    """Feed ``input_data``, copy output to the binary streams (or capture it).

    Return (exit code, captured stdout bytes, captured stderr bytes); a stream
    passed in receives the data instead of the capture.
    """
    captured = {stdout_r: bytearray(), stderr_r: bytearray()}
    sinks = {stdout_r: stdout, stderr_r: stderr}
    _feed(stdin_w, input_data)
    with selectors.DefaultSelector() as selector:
        for fd in (stdout_r, stderr_r):
            selector.register(fd, selectors.EVENT_READ)
        open_fds = 2
        while open_fds:
            for key, _ in selector.select():
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    open_fds -= 1
                elif sinks[key.fd] is not None:
                    sinks[key.fd].write(chunk)
                    sinks[key.fd].flush()
                else:
                    captured[key.fd] += chunk
    _, status = os.waitpid(pid, 0)
    return exit_code(status), bytes(captured[stdout_r]), bytes(captured[stderr_r])


def _feed(fd, data):
    try:
        if data:
            os.write(fd, data)  # small inputs only: larger ones would need the selector
    finally:
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
