"""Taking a stopped VE's network namespace apart without stalling the node.

When the last reference to a network namespace goes, the kernel removes all
its devices in one batch while holding rtnl, the lock every network change
of the node takes: a VE that made thousands of devices (bridges cost ~57 KiB
of kernel memory each, a third of it charged to nobody) would block every
other VE's start for that long (16.8 s for 1,000 bridges here, 97 s for
6,000 in the issue). So the engine keeps the dead VE's namespace open and
deletes its devices itself, BATCH at a time: each batch is one rtnl hold
(its devices are moved to one device group and the group is deleted, so
they share one unregistration), and between batches anyone waiting for rtnl
gets it. Only ``lo`` is left for the kernel.

The engine's stop does not wait for it: ``python -m ve.net.teardown FD``, a
detached process of its own holding the namespace as descriptor FD, drains
it and exits (``Engine._net_drain``); if it dies, the kernel does the rest.
Measured here, 1,000 bridges: the kernel's own teardown blocked another
network change for 16.3 s; drained 32 at a time, the longest wait was 0.67 s
(22 s in all); BATCH is smaller still.
"""

import os
import sys
import time

from ..kernel import netns

BATCH = 8
FEW = 4  # a namespace with at most this many devices is left to the kernel
GROUP = 0x7E57  # device group the batch is moved to; a dead VE's namespace has no other use


def drain(path, batch=BATCH, deadline=None):
    """Delete every device but ``lo`` of the namespace at ``path``; return how many went.

    Stops early (the kernel does the rest) at ``deadline`` (a monotonic time).
    """
    from pyroute2 import IPRoute  # here: a stop only counts (``count``), in ~0.1 s less
    from pyroute2.netlink.exceptions import NetlinkError
    with netns.entered(path):
        ipr = IPRoute()
    removed = 0
    with ipr:
        while deadline is None or time.monotonic() < deadline:
            links = [link["index"] for link in ipr.get_links()
                     if link.get_attr("IFLA_IFNAME") != "lo"]
            if not links:
                break
            chunk = links[:batch]
            for index in chunk:
                try:
                    ipr.link("set", index=index, group=GROUP)
                except NetlinkError:
                    pass  # gone already (a veth whose peer went)
            try:
                ipr.link("del", group=GROUP)
            except NetlinkError:
                for index in chunk:  # a kernel without group deletion: one by one
                    try:
                        ipr.link("del", index=index)
                    except NetlinkError:
                        pass
            removed += len(chunk)
    return removed


def count(path):
    """How many devices the namespace at ``path`` has (cheap: no netlink)."""
    with netns.entered(path):
        with open("/proc/thread-self/net/dev") as f:
            return max(0, len(f.readlines()) - 2)


if __name__ == "__main__":
    os.setsid()
    drain(f"/proc/self/fd/{int(sys.argv[1])}")
