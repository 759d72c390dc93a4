"""The interface cap holds across the network namespaces a VE makes inside its own.

VE root may ``unshare -n`` (or bind-mount a namespace under /run/netns, as
``ip netns add`` does) and make its bridges there. The node watcher finds
those namespaces from the VE's processes (ve/net/nested.py) and counts their
devices with the VE's own: over the cap the newest go, in any namespace.
"""

import os
import subprocess

from ve import state
from ve.net import nested, netif

from .conftest import wait_for
from .test_abuse_netif import (frozen, links_inside, make, netns_ids, open_fds,
                               refused_reaches, sample_of)
from .test_watcher import WatcherProcess, watcher  # noqa: F401  (fixture)

CAP = 32
EACH = 40  # bridges made in each nested namespace
NESTER, STUCK = (426, "198.18.7.46"), (427, "198.18.7.47")


def loop(count, prefix):
    return (f"i=0; while [ $i -lt {count} ]; do ip link add name {prefix}$i type bridge "
            "2>/dev/null; i=$((i+1)); done")


HELD_BY_A_PROCESS = (  # (a) a sleeping process is in it
    f"unshare -n sh -c '{loop(EACH, 'a')}; exec sleep 1000' </dev/null >/dev/null 2>&1 &")
HELD_BY_A_MOUNT = (  # (b) nothing runs in it: a bind mount under /run/netns keeps it
    "mkdir -p /run/netns && touch /run/netns/b && unshare --net=/run/netns/b true && "
    f"nsenter --net=/run/netns/b sh -c '{loop(EACH, 'b')}'")
HELD_BY_AN_FD = (  # (c) only a file of it held open by a process in another namespace
    "unshare -n sleep 1000 </dev/null >/dev/null 2>&1 & x=$!; sleep 0.3; "
    "sh -c \"exec 3</proc/$x/ns/net; exec sleep 1000\" </dev/null >/dev/null 2>&1 & "
    "y=$!; sleep 0.3; kill $x; "
    f"nsenter --net=/proc/$y/fd/3 sh -c '{loop(EACH, 'c')}'")


def namespaces(engine, veid):
    """{inode: device names} of each network namespace the VE holds, its own included."""
    out = {}
    for inode, source in nested.discover(engine.cgroups.pids(str(veid))).items():
        fd = nested.open_netns(source, inode)
        if fd is None:
            continue
        try:
            links = subprocess.run(["nsenter", f"--net=/proc/self/fd/{fd}", "ip", "-o", "link"],
                                   pass_fds=(fd,), capture_output=True, text=True, check=True)
        finally:
            os.close(fd)
        out[inode] = [line.split(":")[1].strip().split("@")[0]
                      for line in links.stdout.splitlines()]
    return out


def total(engine, veid):
    return sum(map(len, namespaces(engine, veid).values()))


def held_anywhere(inodes):
    """Which of network namespaces ``inodes`` a process of this node is in or holds."""
    held = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            links = [f"/proc/{entry}/ns/net"]
            try:
                links += [f"/proc/{entry}/fd/{fd}" for fd in os.listdir(f"/proc/{entry}/fd")]
            except OSError:
                continue
            for link in links:
                try:
                    target = os.readlink(link)
                except OSError:
                    continue
                held |= {i for i in inodes if target == f"net:[{i}]"}
    return held


def record(engine, veid):
    init = state.read_init(engine.layout.state(veid))
    return netif.read_record(engine.layout.netif_record(veid), (init.pid, init.start_time))


def test_bridges_in_nested_namespaces_count_toward_the_cap(engine, watcher):
    veid = make(engine, NESTER, cap=CAP)
    ids_before = netns_ids()
    fds_before = open_fds(watcher.proc.pid)
    engine.start(veid)
    main = nested.inode_of(f"/proc/{engine.status(veid).init_pid}/ns/net")
    for script in (HELD_BY_A_PROCESS, HELD_BY_A_MOUNT, HELD_BY_AN_FD):
        engine.exec(veid, ["sh", "-c", script], timeout=120)
    made = 2 + 3 * (1 + EACH)  # lo, eth0; each namespace's lo and bridges
    assert wait_for(lambda: total(engine, veid) <= CAP, 30), namespaces(engine, veid)
    found = namespaces(engine, veid)
    inner = set(found) - {main}
    assert len(inner) == 3, found  # all three live on, each with its lo
    assert all(names[0] == "lo" for names in found.values()), found
    inside = links_inside(engine, veid)
    assert " lo:" in inside and " eth0@" in inside
    assert NESTER[1] in engine.exec(veid, ["ip", "-4", "addr", "show", "eth0"]).stdout.decode()
    assert refused_reaches(engine, veid, made - CAP), sample_of(engine, veid)
    assert wait_for(lambda: not frozen(engine, veid), 5)
    # A bridge made later in a namespace already followed goes too (its event).
    engine.exec(veid, ["nsenter", "--net=/run/netns/b", "ip", "link", "add", "name", "late",
                       "type", "bridge"])
    assert wait_for(lambda: "late" not in sum(namespaces(engine, veid).values(), []), 10)
    assert total(engine, veid) <= CAP
    assert wait_for(lambda: not frozen(engine, veid), 5)  # thawed once it went
    engine.stop(veid, fast=True)
    # The watcher let go of every namespace (its sockets alone would keep them alive).
    assert wait_for(lambda: open_fds(watcher.proc.pid) == fds_before, 10), \
        (open_fds(watcher.proc.pid), fds_before)
    assert wait_for(lambda: not held_anywhere(inner | {main}), 10)
    # None of this VE's namespaces is still known here. (Subset, not equality: a
    # namespace an earlier test let go may be freed meanwhile, taking its id.)
    assert wait_for(lambda: netns_ids() <= ids_before, 30), (netns_ids(), ids_before)


def test_many_empty_namespaces_over_the_cap_leave_the_ve_running(engine, watcher):
    """Ten namespaces with only lo (never deleted) and a cap of 8: the VE is over
    its cap with nothing to delete. It is recorded, not frozen; a new device
    still goes; letting namespaces go brings the VE back under."""
    veid = make(engine, STUCK, cap=8)
    fds_before = open_fds(watcher.proc.pid)
    engine.start(veid)
    engine.exec(veid, ["sh", "-c", "mkdir -p /run/netns; i=0; while [ $i -lt 10 ]; do "
                       "touch /run/netns/e$i; unshare --net=/run/netns/e$i true; i=$((i+1)); "
                       "done"])
    assert wait_for(lambda: record(engine, veid).get("stuck") == 2 + 10 - 8, 15), \
        (record(engine, veid), watcher.output())
    assert not frozen(engine, veid)
    with_ten = open_fds(watcher.proc.pid)
    assert with_ten >= fds_before + 2 * 10  # two sockets for each
    engine.exec(veid, ["ip", "link", "add", "name", "extra", "type", "bridge"])
    assert wait_for(lambda: "extra" not in links_inside(engine, veid), 10)
    assert refused_reaches(engine, veid, 1)
    assert wait_for(lambda: not frozen(engine, veid), 5)
    engine.exec(veid, ["sh", "-c", "i=0; while [ $i -lt 6 ]; do umount /run/netns/e$i; "
                       "rm /run/netns/e$i; i=$((i+1)); done"])
    assert wait_for(lambda: record(engine, veid).get("stuck") == 0, 10), record(engine, veid)
    assert wait_for(lambda: open_fds(watcher.proc.pid) == with_ten - 2 * 6, 10), \
        (open_fds(watcher.proc.pid), with_ten)
    assert total(engine, veid) == 2 + 4
    engine.stop(veid, fast=True)
    assert wait_for(lambda: open_fds(watcher.proc.pid) == fds_before, 10), \
        (open_fds(watcher.proc.pid), fds_before)
