"""Exit statuses of processes that are not our children: the kernel's process connector.

Only a parent learns its child's exit status through wait(); a VE's init is
re-parented to the host's init. The process connector (NETLINK_CONNECTOR,
CN_IDX_PROC) tells a listening root process of every exit on the host, with
the status wait() would have given, which is how the node watcher tells a
VE's reboot (init killed by SIGHUP) from its power-off (SIGINT).

The connector lives in the initial network namespace only: the socket is
made there (the calling thread visits it for the moment of the socket call).
On kernels since 6.6 the listener asks for exits with a non-zero status
only, which keeps a busy host's traffic down; an init that exits with 0
makes no event and is told by its pidfd alone.
"""

import os
import socket
import struct

from . import netns

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_EXIT = 0x80000000
PROC_EVENT_NONZERO_EXIT = 0x20000000
NLMSG_DONE = 3

_NLMSGHDR = struct.Struct("=IHHII")         # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")          # idx, val, seq, ack, len, flags
_EVENT = struct.Struct("=IIQ")              # what, cpu, timestamp_ns
_EXIT = struct.Struct("=IIIIII")            # pid, tgid, exit_code, exit_signal, ppid, ptgid


class Exit(tuple):
    """(pid, status) of a process that exited: ``status`` as os.waitpid gives it."""

    __slots__ = ()

    def __new__(cls, pid, status):
        return super().__new__(cls, (pid, status))

    pid = property(lambda self: self[0])
    status = property(lambda self: self[1])


def _kernel_at_least(major, minor):
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def _initial_netns():
    """A path to the initial network namespace: host init's, else kthreadd's (kernel
    threads all live there; a hardened init may refuse even root a look at its own)."""
    for pid in (1, 2):
        path = f"/proc/{pid}/ns/net"
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            return path
        except OSError:
            continue
    raise PermissionError("cannot reach the initial network namespace")


def open_listener():
    """Return a non-blocking socket subscribed to process exits (OSError if refused)."""
    with netns.entered(_initial_netns()):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                             NETLINK_CONNECTOR)
    try:
        sock.bind((os.getpid(), CN_IDX_PROC))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if _kernel_at_least(6, 6):  # struct proc_input: op and the events wanted
            payload = struct.pack("=II", PROC_CN_MCAST_LISTEN, PROC_EVENT_NONZERO_EXIT)
        else:
            payload = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def read_exits(sock):
    """Return the Exits of whole processes (thread-group leaders) waiting on ``sock``."""
    found = []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return found
        except OSError:  # ENOBUFS: events were dropped; the pidfds still tell of deaths
            return found
        found.extend(_parse(data))


def _parse(data):
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length = _NLMSGHDR.unpack_from(data, offset)[0]
        if length < _NLMSGHDR.size:
            return
        body = offset + _NLMSGHDR.size + _CN_MSG.size
        if body + _EVENT.size + _EXIT.size <= offset + length:
            what = _EVENT.unpack_from(data, body)[0]
            if what in (PROC_EVENT_EXIT, PROC_EVENT_NONZERO_EXIT):
                pid, tgid, code, _, _, _ = _EXIT.unpack_from(data, body + _EVENT.size)
                if pid == tgid:
                    yield Exit(pid, code)
        offset += (length + 3) & ~3
