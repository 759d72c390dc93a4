"""The interface cap's netlink monitor (ve/net/netif.py) on a network namespace of its own.

No VE here: tests/engine/test_abuse_netif.py runs the whole thing, watcher included.
"""

import os
import socket
import subprocess
import time

import pytest

from ve.net import netif

from .conftest import require_root


@pytest.fixture
def netns():
    """A fresh network namespace (held by a sleeping process): its path."""
    require_root()
    holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    path = f"/proc/{holder.pid}/ns/net"
    while os.readlink(path) == os.readlink("/proc/self/ns/net"):
        time.sleep(0.01)
    yield path
    holder.kill()
    holder.wait()


def ip(path, *argv):
    return subprocess.run(["nsenter", f"--net={path}", "ip", *argv], check=True,
                          capture_output=True, text=True).stdout


def bridges(path, names):
    script = "".join(f"link add name {name} type bridge\n" for name in names)
    subprocess.run(["nsenter", f"--net={path}", "ip", "-batch", "-"], input=script,
                   check=True, capture_output=True, text=True)


def names(path):
    return [line.split(":")[1].strip().split("@")[0]
            for line in ip(path, "-o", "link").splitlines()]


def index_of(path, name):
    return int(ip(path, "-o", "link", "show", name).split(":")[0])


def test_the_newest_devices_over_the_cap_go_and_kept_ones_never(netns):
    bridges(netns, ["b1", "b2", "b3", "b4", "b5"])
    monitor = netif.Monitor(netns, cap=4, keep=(index_of(netns, "b1"),))
    try:
        assert monitor.count() == 6
        assert monitor.trim() == 2
        assert names(netns) == ["lo", "b1", "b2", "b3"]
        monitor.cap = 1  # below what must stay: everything else goes, lo and b1 stay
        assert monitor.trim() == 2
        assert names(netns) == ["lo", "b1"]
        bridges(netns, ["late"])
        while monitor.pump():
            pass
        assert monitor.excess() == [index_of(netns, "late")]
        monitor.cap = 0  # no cap: nothing is over it
        assert monitor.excess() == []
    finally:
        monitor.close()


def test_arrival_order_not_ifindex_decides_what_is_newest(netns):
    """A VE may choose its devices' ifindex: a low one does not make an old device."""
    monitor = netif.Monitor(netns, cap=2)
    try:
        ip(netns, "link", "add", "name", "high", "index", "500", "type", "bridge")
        ip(netns, "link", "add", "name", "low", "index", "7", "type", "bridge")
        while monitor.pump():
            pass
        assert monitor.trim() == 1
        assert names(netns) == ["lo", "high"]  # "low" came last
    finally:
        monitor.close()


def test_a_lost_event_queue_is_read_again_from_a_dump(netns):
    monitor = netif.Monitor(netns, cap=10)
    try:
        monitor.events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # overflows
        bridges(netns, [f"f{i}" for i in range(200)])
        while monitor.pump():
            pass
        assert monitor.count() == 201  # what the kernel says, events lost or not
        while monitor.excess():
            monitor.trim()
        assert len(names(netns)) == 10
    finally:
        monitor.close()
