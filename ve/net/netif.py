"""Holding a VE to its interface cap (``numnetif``) from the host side.

The kernel has no per-namespace limit on network devices, and a VE's root
holds CAP_NET_ADMIN in its own namespace: it can make bridges, dummies and
veths by the thousand, each ~57 KiB of kernel memory that its memory cgroup
is charged only part of (docs/security.md). A ``Monitor`` watches one VE's
namespace through two rtnetlink sockets made inside it (a socket stays in
the namespace it was made in, whichever thread uses it later): one
subscribed to link events, one for dumps and deletions. Over the cap, it
deletes the newest devices it has seen arrive; ``lo`` and the engine's own
``eth0`` (given as ``keep``) are never deleted.

Raw netlink rather than pyroute2: only the message type and ifindex of each
message matter here, and a flood is thousands of messages.
"""

import errno
import heapq
import itertools
import json
import os
import socket
import struct

from .. import fsutil
from ..kernel import netns

RTMGRP_LINK = 1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
IFLA_GROUP = 27
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
LOOPBACK_INDEX = 1  # lo is ifindex 1 in every network namespace
EVENT_BUFFER = 4 << 20  # a short burst of events fits; a longer one is ENOBUFS and a dump
CONTROL_TIMEOUT = 10.0
BATCH = 16

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFI = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_ATTR_U32 = struct.Struct("=HHI")  # rtattr (len, type) and a u32


class Monitor:
    """The devices of one VE's network namespace, in order of arrival, and its cap."""

    def __init__(self, netns_path, cap, keep=(), clock=None):
        """Open the sockets inside the namespace at ``netns_path`` (a path or
        /proc/self/fd/N) and read what it holds now; ``keep``: ifindexes never
        deleted; ``clock``: an iterator of arrival numbers, shared by the monitors
        of one VE's namespaces so that newest means newest across them."""
        with netns.entered(netns_path):
            self.events = _socket()
            self.control = _socket()
        try:
            self.events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, EVENT_BUFFER)
            self.events.bind((0, RTMGRP_LINK))  # before the dump: no arrival is missed
            self.events.setblocking(False)
            self.control.settimeout(CONTROL_TIMEOUT)
            self.control.bind((0, 0))
            self.cap = cap
            self.keep = {LOOPBACK_INDEX, *keep}
            self.order = {}  # ifindex -> arrival number
            self.clock = itertools.count(1) if clock is None else clock
            self.seq = 0
            self.resync()
        except BaseException:
            self.close()
            raise

    def fileno(self):
        return self.events.fileno()

    def close(self):
        self.events.close()
        self.control.close()

    def count(self):
        return len(self.order)

    def resync(self):
        """Re-read every device (at start, and after the event queue overflowed).

        Devices not seen before count as arriving now, oldest ifindex first.
        """
        present = sorted(self._dump())
        for index in set(self.order) - set(present):
            del self.order[index]
        for index in present:
            self._arrived(index)

    def pump(self, budget=1024):
        """Take in up to ``budget`` pending link events; True if more may be waiting."""
        for _ in range(budget):
            try:
                data = self.events.recv(1 << 16)
            except BlockingIOError:
                return False
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.resync()  # events were lost: the kernel's word is the dump
                continue
            for kind, _, payload in _messages(data):
                if kind == RTM_NEWLINK:
                    self._arrived(_IFI.unpack_from(payload)[2])
                elif kind == RTM_DELLINK:
                    self.order.pop(_IFI.unpack_from(payload)[2], None)
        return True

    def excess(self):
        """The devices to delete to get down to the cap, newest first."""
        over = len(self.order) - self.cap
        if not self.cap or over <= 0:
            return []
        newest = sorted((i for i in self.order if i not in self.keep),
                        key=self.order.__getitem__, reverse=True)
        return newest[:over]

    def deletable(self):
        """(arrival number, ifindex) of each device that may be deleted."""
        return [(n, i) for i, n in self.order.items() if i not in self.keep]

    def trim(self, victims=None):
        """Delete the devices over the cap (or ``victims``, ifindexes of this
        namespace); return how many this call deleted.

        They go as one batch: each is moved to a device group of this call's
        own (random: the VE cannot guess it ahead) and the group is deleted,
        which unregisters them together. One by one, each bridge waited ~20 ms
        for its RCU grace period while holding rtnl; the flood outran that. At
        most BATCH go at once: a batch holds rtnl, which every VE's start needs
        (as in ve/net/teardown.py).
        """
        victims = (self.excess() if victims is None else victims)[:BATCH]
        if not victims:
            return 0
        group = int.from_bytes(os.urandom(4), "little") | 1 << 16  # never 0, the default
        moved = [index for index in victims if self._ack(RTM_SETLINK, index, group)]
        if moved and not self._ack(RTM_DELLINK, 0, group):
            moved = [index for index in moved if self._ack(RTM_DELLINK, index)]
        for index in victims:
            self.order.pop(index, None)  # deleted, or gone already (a veth's peer)
        return len(moved)

    # -- netlink ---------------------------------------------------------------

    def _arrived(self, index):
        if index not in self.order:
            self.order[index] = next(self.clock)

    def _request(self, kind, flags, index=0, group=None):
        self.seq += 1
        body = _IFI.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        if group is not None:
            body += _ATTR_U32.pack(_ATTR_U32.size, IFLA_GROUP, group)
        self.control.send(_HDR.pack(_HDR.size + len(body), kind,
                                    NLM_F_REQUEST | flags, self.seq, 0) + body)
        return self.seq

    def _dump(self):
        seq = self._request(RTM_GETLINK, NLM_F_DUMP)
        found = []
        while True:
            for kind, msg_seq, payload in _messages(self.control.recv(1 << 16)):
                if msg_seq != seq:
                    continue  # the answer to an earlier request that timed out
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    _raise_if_error(payload)
                elif kind == RTM_NEWLINK:
                    found.append(_IFI.unpack_from(payload)[2])

    def _ack(self, kind, index, group=None):
        """Send one request and wait for its answer; False if there was nothing to
        act on (the device, or every device of the group, was gone already)."""
        seq = self._request(kind, NLM_F_ACK, index, group)
        while True:
            for msg_kind, msg_seq, payload in _messages(self.control.recv(1 << 16)):
                if msg_kind == NLMSG_ERROR and msg_seq == seq:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                        return False
                    if code:
                        raise OSError(code, f"device {index}: {os.strerror(code)}")
                    return True


def over(monitors, cap):
    """How many devices the namespaces of ``monitors`` hold together over ``cap``."""
    return sum(m.count() for m in monitors) - cap if cap else 0


def excess_of(monitors, cap):
    """(monitor, ifindex) of the devices to delete to bring the namespaces of
    ``monitors`` (one VE's) down to ``cap`` together, newest first. Kept
    devices never go: fewer than the excess when they alone are over."""
    extra = over(monitors, cap)
    if extra <= 0:
        return []
    newest = heapq.nlargest(extra, ((n, k, i) for k, m in enumerate(monitors)
                                    for n, i in m.deletable()))
    return [(monitors[k], i) for _, k, i in newest]


def trim_all(monitors, cap):
    """Delete up to BATCH of the devices over ``cap`` (see ``excess_of``), each
    namespace's in one batch; return how many went."""
    victims = {}
    for monitor, index in excess_of(monitors, cap)[:BATCH]:
        victims.setdefault(monitor, []).append(index)
    return sum(monitor.trim(indexes) for monitor, indexes in victims.items())


def refused(path, init):
    """Devices deleted over the cap during the VE run of ``init`` ((pid, start
    time)), from the record at ``path``; 0 if it has none for that run."""
    return read_record(path, init).get("refused", 0)


def read_record(path, init):
    """The watcher's record for the VE run of ``init``: {"refused": N, "frozen":
    bool, "stuck": M}, or {} if there is none for that run. ``stuck``: devices
    over the cap that may not be deleted (lo of nested namespaces), last seen."""
    try:
        with open(path, "rb") as f:
            saved = json.loads(f.read(4096))
        if tuple(saved["init"]) == tuple(init):
            return {"refused": int(saved["refused"]), "frozen": saved.get("frozen") is True,
                    "stuck": int(saved.get("stuck", 0))}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {}


def write_record(path, init, refused, frozen=False, stuck=0):
    """Write the record ``read_record`` reads (``frozen``: the VE is being frozen
    by the watcher, which a watcher that takes over must undo)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fsutil.atomic_write(path, json.dumps({"init": list(init), "refused": refused,
                                          "frozen": frozen, "stuck": stuck}), durable=False)


def count(pid):
    """Network devices in the namespace of process ``pid`` (no netlink: its
    /proc/PID/net/dev, two header lines and one line a device)."""
    with open(f"/proc/{pid}/net/dev", "rb") as f:
        return max(0, sum(1 for _ in f) - 2)


def _socket():
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         socket.NETLINK_ROUTE)


def _messages(data):
    """(type, seq, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + _HDR.size <= len(data):
        length, kind, _, seq, _ = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            break
        yield kind, seq, data[offset + _HDR.size:offset + length]
        offset += (length + 3) & ~3


def _raise_if_error(payload):
    code = -struct.unpack_from("=i", payload)[0]
    if code:
        raise OSError(code, os.strerror(code))
