"""Network namespaces by identity: which one a VE's host side lives in, and entering it.

A VE's host side (its veth end, routes, rules, qdiscs) lives in the network
namespace of whoever started it: the host's, or a named one such as the
dashboard node's ``hosting-<host>``. The run file records that namespace's
identity so a later caller in another namespace can find it (if it is named
under /run/netns) instead of silently reading nothing.
"""

import contextlib
import os

from . import libc

NAMED_DIR = "/run/netns"
OWN = "/proc/self/ns/net"


def identity(path=OWN):
    """A stable name for the network namespace at ``path`` ("dev:inode")."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def path_of(ident):
    """A path that opens namespace ``ident``: ours, else a named one; None if out of reach."""
    if ident is None or ident == identity():
        return OWN
    try:
        names = os.listdir(NAMED_DIR)
    except OSError:
        return None
    for name in names:
        path = os.path.join(NAMED_DIR, name)
        try:
            if identity(path) == ident:
                return path
        except OSError:
            continue  # removed meanwhile
    return None


@contextlib.contextmanager
def entered(path):
    """Run the body with the calling thread in the network namespace at ``path``.

    Sockets made in the body (a pyroute2 IPRoute, say) stay in that namespace
    after the thread returns to its own. Only the calling thread moves.
    """
    own = os.open(OWN, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            libc.setns(target, libc.CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            libc.setns(own, libc.CLONE_NEWNET)
    finally:
        os.close(own)
