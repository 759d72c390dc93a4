"""Where `vectl exec`'s commands live: in the VE's process tree, session and clocks.

A checkpoint saves the tree under the VE's init, in init's time namespace, and
refuses sessions led from outside the VE; these are the places a command run
by the host could escape to (found by a CRIU trial, ../shared/CRIU.md).
"""

import os
import time

import pytest

from ve.config import Limits, VEConfig
from ve.errors import ResourceError

from .conftest import wait_for

VEID = 141


@pytest.fixture
def init(engine):
    engine.create(VEConfig(VEID, f"tree{VEID}", "busybox", Limits()))
    return engine.start(VEID)


def stat_of(pid):
    """(comm, ppid, pgid, sid) of a host PID, read on the host."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2:].split()
    return raw[raw.index("(") + 1:raw.rindex(")")], int(fields[1]), int(fields[2]), int(fields[3])


def host_pids_of(engine, comm):
    return [pid for pid in engine.cgroups.pids(str(VEID)) if stat_of(pid)[0] == comm]


def host_pids_anywhere(cmdline):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:2] == cmdline:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_command_leads_its_own_session_inside_the_ve(engine, init):
    out = engine.exec(VEID, ["sh", "-c", "cut -d' ' -f1,5,6 /proc/$$/stat"]).stdout.split()
    pid, pgid, sid = map(int, out)
    # Not 0 (a session led from outside the VE's PID namespace, the caller's).
    assert pid == pgid == sid and pid > 1


def test_what_a_command_leaves_running_is_a_child_of_the_ves_init(engine, init):
    engine.exec(VEID, ["sh", "-c", "sleep 600 >/dev/null 2>&1 &"])
    sleeps = wait_for(lambda: host_pids_of(engine, "sleep"), 5)
    assert sleeps and all(stat_of(pid)[1] == init for pid in sleeps)
    inside = engine.exec(VEID, ["ps", "-o", "ppid,comm"]).stdout.decode()
    assert any(line.split() == ["1", "sleep"] for line in inside.splitlines()), inside


def test_a_command_that_changed_its_user_is_ended_by_the_callers_timeout(engine, init):
    """su clears the parent-death signal; such a command, its caller gone, used to
    end up a child of the host's PID 1, outside the VE's tree. Its session ends."""
    with pytest.raises(ResourceError, match="still running"):
        engine.exec(VEID, ["su", "nobody", "-s", "/bin/sh", "-c", "sleep 601"], timeout=1)
    assert wait_for(lambda: not host_pids_anywhere([b"sleep", b"601"]), 5)
    pids = set(engine.cgroups.pids(str(VEID)))
    assert all(pid == init or stat_of(pid)[1] in pids for pid in pids), \
        [stat_of(pid) for pid in pids]


def test_the_relay_in_the_ve_holds_no_descriptor(engine, init):
    """The command's parent inside the VE is a copy of the host caller: it keeps
    nothing of the host open, and VE root cannot look into it."""
    engine.exec(VEID, ["sh", "-c", "sleep 602 >/dev/null 2>&1 &"])
    started = time.monotonic()
    import threading
    runner = threading.Thread(target=engine.exec, args=(VEID, ["sleep", "3"]))
    runner.start()
    try:
        relay = wait_for(lambda: [p for p in host_pids_anywhere([b"sleep", b"3"])
                                  if stat_of(stat_of(p)[1])[0] == "vectl-relay"], 5)
        assert relay, "the command's parent is not the relay"
        parent = stat_of(relay[0])[1]
        assert os.listdir(f"/proc/{parent}/fd") == []
        denied = engine.exec(VEID, ["sh", "-c", "ls /proc/$PPID/fd"])  # its own relay
        assert denied.returncode != 0 and b"ermission denied" in denied.stderr
    finally:
        runner.join()
    assert time.monotonic() - started < 30


def test_a_ve_has_its_own_clock_since_boot_and_commands_share_it(engine, init):
    """Its uptime counts from its start (CLOCK_BOOTTIME in its own time namespace)."""
    uptime = float(engine.exec(VEID, ["cut", "-d", " ", "-f1", "/proc/uptime"]).stdout)
    with open("/proc/uptime") as f:
        host = float(f.read().split()[0])
    with open(f"/proc/{init}/stat") as f:
        started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    assert abs(uptime - (host - started)) < 2, (uptime, host, started)
    ns = os.readlink(f"/proc/{init}/ns/time")
    assert ns != os.readlink("/proc/self/ns/time")
    engine.exec(VEID, ["sh", "-c", "sleep 603 >/dev/null 2>&1 &"])
    sleeps = wait_for(lambda: host_pids_of(engine, "sleep"), 5)
    assert sleeps and all(os.readlink(f"/proc/{pid}/ns/time") == ns for pid in sleeps)
