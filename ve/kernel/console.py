"""A VE's console: a pseudo-terminal of the host whose other end is the VE's /dev/console.

As LXC does, the pair comes from the host's devpts, not the VE's: the VE gets
the terminal end (bound over its /dev/console, owned by its root, so a getty
there works) and the host keeps the controlling end, which the node watcher
holds and drains (``ve/watch/consoles.py``). A terminal from the host's devpts
is one CRIU can be told about as external (``tty[rdev:dev]``) and be handed a new
one of at restore, which the VE's own devpts could not give.
"""

import fcntl
import os
import struct
import termios

ROWS, COLS = 24, 80
TTY_GID = 5  # the tty group inside a VE (Debian's and busybox's)
TIOCGPTPEER = 0x5441  # open the terminal end of a master (Linux 4.13)


def open_pair(idmap_base):
    """A new (master, terminal) pair, the terminal owned by the VE's root (host uid
    ``idmap_base``) and its tty group, mode 0620 like a login terminal."""
    master, terminal = os.openpty()
    try:
        os.fchown(terminal, idmap_base, idmap_base + TTY_GID if idmap_base else TTY_GID)
        os.fchmod(terminal, 0o620)
        set_size(master, ROWS, COLS)
        os.set_blocking(master, False)
    except OSError:
        os.close(master)
        os.close(terminal)
        raise
    return master, terminal


def set_size(fd, rows, cols):
    """Set the window size of the terminal behind ``fd`` (its programs get SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def peer(master):
    """A descriptor of ``master``'s terminal end: held so the master never sees a hang-up
    while nothing in the VE has its console open."""
    return fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
