"""A VE cannot flood the host with network devices (issue 14, numnetif).

The VE makes bridges in a loop (busybox ``ip``); the node watcher of the
test (``vectl watch``, as a service runs it) deletes each one over the VE's
cap as soon as the kernel announces it. Bridges are what the issue measured:
~57 KiB of kernel memory each, a third of it charged to nobody.
"""

import os
import signal
import subprocess
import threading
import time

from ve import Limits, VEConfig, state
from ve.errors import InvalidConfig
from ve.net import netif

from .conftest import vectl, wait_for
from .test_watcher import WatcherProcess, watcher  # noqa: F401  (fixture)

MiB = 1 << 20
CAP = 32
FLOOD = 500
FLOODER, OTHER = (421, "198.18.7.42"), (422, "198.18.7.43")


def make(engine, ve, cap=CAP):
    veid, ip = ve
    engine.create(VEConfig(veid, f"nf{veid}.example", "busybox",
                           Limits(numnetif=cap, numproc=1024, ram="512M"), ips=(ip,)))
    return veid


def flood(engine, veid, count=FLOOD, prefix="b"):
    """Make ``count`` bridges inside the VE, one ``ip link add`` each; return how many
    the kernel made (each is deleted by the watcher once over the cap)."""
    script = (f"i=0; n=0; while [ $i -lt {count} ]; do "
              f"ip link add name {prefix}$i type bridge 2>/dev/null && n=$((n+1)); "
              "i=$((i+1)); done; echo $n")
    out = engine.exec(veid, ["sh", "-c", script])
    return int(out.stdout.decode().split()[-1])


def devices(engine, veid):
    return netif.count(engine.status(veid).init_pid)


def links_inside(engine, veid):
    return engine.exec(veid, ["ip", "-o", "link"]).stdout.decode()


def sample_of(engine, veid):
    return [r for r in engine.sample()["ves"] if r["veid"] == veid][0]


def refused_reaches(engine, veid, count):
    """Wait for the VE's samples to count ``count`` refusals (the watcher records
    each batch just after the kernel deleted it)."""
    return wait_for(lambda: (sample_of(engine, veid)["netif_refused"] or 0) >= count, 10)


def slab():
    with open("/proc/meminfo") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return fields["Slab"] + fields.get("Percpu", 0)


def netns_ids():
    """Network namespace IDs this namespace knows: one per live peer namespace of a veth."""
    out = subprocess.run(["ip", "netns", "list-id"], capture_output=True, text=True, check=True)
    return set(out.stdout.split("\n")) - {""}


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def frozen(engine, veid):
    if engine.cgroups.version == 2:
        with open(engine.cgroups.file_path(str(veid), "cgroup.events")) as f:
            return "frozen 1" in f.read()
    with open(engine.cgroups.file_path(str(veid), "freezer.state")) as f:
        return f.read().strip() != "THAWED"


def guarded(engine, veid):
    """Wait until the watcher holds the VE to its cap (a bridge over it goes at once)."""
    def probe():
        engine.exec(veid, ["ip", "link", "add", "name", "probe", "type", "bridge"])
        return wait_for(lambda: "probe" not in links_inside(engine, veid), 1)
    while devices(engine, veid) < engine.config(veid).limits.numnetif:
        engine.exec(veid, ["ip", "link", "add", "name", f"f{devices(engine, veid)}",
                           "type", "bridge"])
    return wait_for(probe, 15)


def test_a_bridge_flood_stops_at_the_cap_and_costs_the_host_little(engine, watcher):
    veid = make(engine, FLOODER)
    other = make(engine, OTHER)
    ids_before = netns_ids()
    fds_before = open_fds(watcher.proc.pid)
    engine.start(veid)
    assert netns_ids() != ids_before  # the VE's namespace, seen through its veth
    slab_before = slab()
    other_start = {}

    def start_other():  # another VE starts normally while the flood runs
        time.sleep(0.5)
        begun = time.monotonic()
        engine.start(other)
        other_start["seconds"] = time.monotonic() - begun

    starter = threading.Thread(target=start_other)
    starter.start()
    made = flood(engine, veid)
    starter.join(60)
    assert made == FLOOD  # each bridge is made, then deleted: the VE sees no error
    assert wait_for(lambda: devices(engine, veid) <= CAP, 15), devices(engine, veid)
    inside = links_inside(engine, veid)
    assert " lo:" in inside and " eth0@" in inside  # what the engine made stays
    assert FLOODER[1] in engine.exec(veid, ["ip", "-4", "addr", "show", "eth0"]).stdout.decode()
    assert refused_reaches(engine, veid, FLOOD - CAP), sample_of(engine, veid)
    assert sample_of(engine, veid)["netif"] <= CAP
    grown = slab() - slab_before
    # Uncapped, 500 bridges hold ~500 x 57 KiB = 28 MiB; capped, 30 of them stay.
    assert grown < 8 * MiB, f"kernel slab grew by {grown / MiB:.1f} MiB"
    assert engine.status(other).state == "running" and other_start["seconds"] < 20
    assert sample_of(engine, other)["netif_refused"] == 0  # not flooded
    engine.stop(veid, fast=True)
    engine.stop(other, fast=True)
    # Nothing is left: the watcher's sockets in the VE's namespace, the namespace itself.
    # (The guard is one thread of the watcher for all VEs: none comes or goes with a VE.)
    assert wait_for(lambda: open_fds(watcher.proc.pid) == fds_before, 10), \
        (open_fds(watcher.proc.pid), fds_before)
    # None of this VE's namespaces is still known here. (Subset, not equality: a
    # namespace an earlier test let go may be freed meanwhile, taking its id.)
    assert wait_for(lambda: netns_ids() <= ids_before, 30), (netns_ids(), ids_before)


def test_the_cap_follows_set_restart_and_a_new_watcher(engine, watcher):
    veid = make(engine, FLOODER)
    engine.start(veid)
    assert guarded(engine, veid)
    assert devices(engine, veid) == CAP
    engine.set(veid, numnetif=16)  # lower: the newest devices over it go
    assert wait_for(lambda: devices(engine, veid) == 16, 10), devices(engine, veid)
    assert " eth0@" in links_inside(engine, veid)
    assert refused_reaches(engine, veid, CAP - 16), sample_of(engine, veid)
    refused = sample_of(engine, veid)["netif_refused"]
    # The watcher dies while it had the VE frozen; its twin becomes the watcher,
    # thaws the VE, reads the cap and carries the count on.
    init = state.read_init(engine.layout.state(veid))
    netif.write_record(engine.layout.netif_record(veid), (init.pid, init.start_time), refused,
                       frozen=True)
    engine.cgroups.frozen(str(veid)).__enter__()  # as the killed watcher left it
    os.kill(watcher.proc.pid, signal.SIGKILL)
    watcher.proc.wait()
    assert wait_for(lambda: len(watcher.pids()) == 2, 20), watcher.output()
    assert wait_for(lambda: not frozen(engine, veid), 15), watcher.output()
    assert flood(engine, veid, 40, prefix="k") == 40
    assert wait_for(lambda: devices(engine, veid) <= 16, 15), devices(engine, veid)
    assert refused_reaches(engine, veid, refused + 40), sample_of(engine, veid)
    engine.set(veid, numnetif=0)  # no cap: nothing is deleted
    time.sleep(1)  # the watcher takes a changed config in within half a second
    flood(engine, veid, 10, prefix="u")
    time.sleep(1.5)
    assert devices(engine, veid) == 26
    assert sample_of(engine, veid)["netif_refused"] is None
    engine.set(veid, numnetif=CAP)
    engine.restart(veid)  # a new run: a new count, the same cap
    assert sample_of(engine, veid)["netif_refused"] == 0
    flood(engine, veid, 60, prefix="r")
    assert wait_for(lambda: devices(engine, veid) <= CAP, 15), devices(engine, veid)
    assert refused_reaches(engine, veid, 60 - CAP), sample_of(engine, veid)


def test_vectl_takes_the_cap_and_the_conf_file_keeps_it(engine):
    vectl(engine, "create", 423, "--template", "busybox", "--hostname", "n.example",
          "--numnetif", "40")
    assert engine.config(423).limits.numnetif == 40
    assert 'NUMNETIF="40"' in engine.layout.conf(423).read_text()
    vectl(engine, "set", 423, "--numnetif", "0")
    assert engine.config(423).limits.numnetif == 0
    assert Limits().numnetif == 128  # the engine's default: room for docker's veths


def test_a_bad_cap_is_refused_and_changes_nothing(engine):
    vectl(engine, "create", 424, "--template", "busybox", "--hostname", "n.example",
          "--numnetif", "40")
    before = engine.layout.conf(424).read_text()
    for bad in ("-1", "abc", "65537", "1.5", "1e3", ""):
        out = vectl(engine, "set", 424, "--numnetif", bad, check=False)
        assert out.returncode != 0 and "numnetif" in out.stderr, (bad, out.stderr)
        try:
            engine.set(424, numnetif=bad)
            raise AssertionError(f"numnetif {bad!r} was taken")
        except InvalidConfig as exc:
            assert "numnetif" in str(exc)
    assert engine.layout.conf(424).read_text() == before
    out = vectl(engine, "create", 425, "--template", "busybox", "--hostname", "m.example",
                "--numnetif", "many", check=False)
    assert out.returncode != 0 and "numnetif" in out.stderr
    assert not engine.layout.conf(425).exists()
