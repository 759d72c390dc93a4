"""Isolation of real VEs: the host reaches into VEs, nothing leaks out of them or into them.

OpenVZ semantics: the host sees and signals every VE process directly, while
host names, SysV IPC objects and mounts stay on their own side.
"""

import ctypes
import os
import socket
import subprocess
import sys
import tempfile
import uuid

import pytest

from ve import Limits, VEConfig
from ve.kernel import proc

from .conftest import vectl, wait_for

IPC_CREAT, IPC_EXCL, IPC_RMID = 0o1000, 0o2000, 0
LONG_RUNNER = b"#!/bin/sh\nwhile :; do sleep 1; done\n"

_libc = ctypes.CDLL(None, use_errno=True)


# -- helpers -------------------------------------------------------------------


def start_ve(engine, veid=101, **limits):
    """Create and start a busybox VE; return its init's host PID."""
    engine.create(VEConfig(veid, f"iso{veid}", "busybox", Limits(**limits)))
    return engine.start(veid)


def ok(engine, veid, *argv, input=b""):
    """Run argv in the VE, which must succeed; return its stdout as text."""
    result = engine.exec(veid, list(argv), input=input)
    assert result.returncode == 0, f"{argv} failed ({result.returncode}): {result.stderr!r}"
    return result.stdout.decode()


def host_pids_named(engine, veid, name):
    """Host PIDs of the live processes called ``name`` in the VE's cgroup."""
    pids = []
    for pid in engine.cgroups.pids(str(veid)):
        fields = open_stat(pid)
        if fields and fields[0] == name and fields[1] != "Z":
            pids.append(pid)
    return pids


def open_stat(pid):
    """Return (comm, state) of a host PID, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2]


def start_long_runner(engine, veid, name="vekillme"):
    """Install /bin/NAME (a sleep loop) in the VE and start it detached."""
    ok(engine, veid, "sh", "-c", f"cat > /bin/{name} && chmod 755 /bin/{name}",
       input=LONG_RUNNER)
    ok(engine, veid, "sh", "-c", f"/bin/{name} >/dev/null 2>&1 &")


def shm_keys(text):
    """Return the SysV shm keys listed in a /proc/sysvipc/shm text."""
    return {int(line.split()[0]) for line in text.splitlines()[1:] if line.strip()}


def host_file(path):
    with open(path) as handle:
        return handle.read()


# -- signals -------------------------------------------------------------------


def test_plain_host_kill_reaches_a_ve_process(engine):
    """A process in a VE is an ordinary host PID: the host's `kill` ends it."""
    init = start_ve(engine)
    ok(engine, 101, "sh", "-c", "sleep 1000 >/dev/null 2>&1 &")
    [pid] = wait_for(lambda: host_pids_named(engine, 101, "sleep"))
    assert proc.innermost_pid(pid) not in (None, pid), "sleep is not in the VE's PID namespace"
    assert subprocess.run(["kill", str(pid)], timeout=10).returncode == 0
    assert wait_for(lambda: not host_pids_named(engine, 101, "sleep")), "sleep survived kill"
    # Reaped by the VE's init (busybox init reaps, then pauses a second: a VE that
    # just booted may show the zombie until then).
    assert wait_for(lambda: "sleep" not in ok(engine, 101, "ps", "-o", "comm"), 5)
    assert engine.status(101).init_pid == init


def test_host_killall_ends_the_name_in_every_ve(engine):
    """`killall NAME` on the host ends NAME in every VE and spares the VEs' inits."""
    inits = {veid: start_ve(engine, veid) for veid in (101, 102)}
    for veid in inits:
        start_long_runner(engine, veid)
    for veid in inits:
        assert wait_for(lambda: host_pids_named(engine, veid, "vekillme")), \
            f"vekillme did not start in VE {veid}"
    done = subprocess.run(["killall", "vekillme"], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    for veid, init in inits.items():
        assert wait_for(lambda: not host_pids_named(engine, veid, "vekillme")), \
            f"vekillme survived in VE {veid}"
        assert wait_for(lambda: "vekillme" not in ok(engine, veid, "ps", "-o", "comm"), 5)
        status = engine.status(veid)
        assert (status.state, status.init_pid) == ("running", init)


# -- host name -----------------------------------------------------------------


def test_hostname_set_in_a_ve_does_not_change_the_host(engine):
    """`hostname x` inside a VE changes the VE's name only."""
    host_before = socket.gethostname()
    start_ve(engine)
    new_name = f"ve-{uuid.uuid4().hex[:8]}"
    ok(engine, 101, "hostname", new_name)
    assert ok(engine, 101, "hostname").strip() == new_name
    assert socket.gethostname() == host_before
    assert host_file("/proc/sys/kernel/hostname").strip() == host_before


def test_host_hostname_is_not_visible_in_a_ve(engine):
    """A VE sees its own host name everywhere, never the host's."""
    host_name = socket.gethostname()
    assert host_name != "iso101"
    start_ve(engine)
    for argv in (["hostname"], ["uname", "-n"], ["cat", "/proc/sys/kernel/hostname"]):
        assert ok(engine, 101, *argv).strip() == "iso101", argv
    assert host_name not in ok(engine, 101, "cat", "/etc/hostname", "/etc/hosts")


# -- SysV IPC ------------------------------------------------------------------


@pytest.fixture
def host_shm():
    """A SysV shared memory segment on the host, removed after the test; yields its key."""
    key = 0x7E570000 | int(uuid.uuid4().hex[:4], 16)
    shmid = _libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096),
                         ctypes.c_int(IPC_CREAT | IPC_EXCL | 0o600))
    assert shmid >= 0, f"shmget failed: {os.strerror(ctypes.get_errno())}"
    yield key
    _libc.shmctl(ctypes.c_int(shmid), ctypes.c_int(IPC_RMID), None)


def test_host_shm_segment_is_invisible_in_a_ve(engine, host_shm):
    """A SysV shm segment of the host does not exist in a VE's IPC namespace."""
    assert host_shm in shm_keys(host_file("/proc/sysvipc/shm"))
    start_ve(engine)
    inside = ok(engine, 101, "cat", "/proc/sysvipc/shm")
    assert host_shm not in shm_keys(inside)
    assert len(inside.splitlines()) == 1, f"the VE sees segments it did not make: {inside}"


def test_ve_shm_segment_is_invisible_on_the_host(engine):
    """A SysV shm segment made in a VE's IPC namespace does not appear on the host."""
    init = start_ve(engine)
    key = 0x5E5E0000 | int(uuid.uuid4().hex[:4], 16)
    # A process in the VE's IPC namespace makes it; it lives as long as the VE.
    maker = ("import ctypes; libc = ctypes.CDLL(None); "
             f"assert libc.shmget({key}, 4096, {IPC_CREAT | IPC_EXCL | 0o600}) >= 0")
    made = subprocess.run(["nsenter", "-t", str(init), "-i", sys.executable, "-c", maker],
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    assert key in shm_keys(ok(engine, 101, "cat", "/proc/sysvipc/shm"))
    assert key not in shm_keys(host_file("/proc/sysvipc/shm"))


# -- mounts --------------------------------------------------------------------


def test_mount_in_a_ve_is_invisible_on_the_host(engine):
    """A tmpfs mounted inside a VE never shows in the host's mount table.

    The host has one mount of the VE's: its disk image at private/101, which
    is how the host sees every VE file."""
    start_ve(engine)
    source = f"vetmp-{uuid.uuid4().hex[:8]}"
    ok(engine, 101, "sh", "-c", f"mkdir -p /mnt && mount -t tmpfs {source} /mnt")
    assert f"{source} /mnt tmpfs" in ok(engine, 101, "cat", "/proc/mounts")
    for table in ("/proc/self/mountinfo", "/proc/1/mountinfo"):
        text = host_file(table)
        targets = [line.split()[4] for line in text.splitlines()
                   if str(engine.layout.root) in line]
        assert source not in text, table
        assert targets == [str(engine.layout.private(101))], table


@pytest.fixture
def host_tmpfs():
    """A tmpfs mounted by the host on a fresh directory, unmounted after; yields (source, dir)."""
    target = tempfile.mkdtemp(prefix="vetest-hostmnt-")
    source = f"hosttmp-{uuid.uuid4().hex[:8]}"
    mounted = False

    def mount():
        nonlocal mounted
        subprocess.run(["mount", "-t", "tmpfs", source, target], check=True, timeout=10)
        mounted = True

    yield source, target, mount
    if mounted:
        subprocess.run(["umount", target], check=True, timeout=10)
    os.rmdir(target)


def test_host_mount_made_after_start_is_invisible_in_a_ve(engine, host_tmpfs):
    """A tmpfs the host mounts while a VE runs does not propagate into the VE."""
    source, target, mount = host_tmpfs
    start_ve(engine)
    mount()
    assert f"{source} {target} tmpfs" in host_file("/proc/self/mounts")
    inside = ok(engine, 101, "cat", "/proc/mounts")
    assert source not in inside and target not in inside


def test_host_mount_table_is_unchanged_by_a_ve_lifecycle(engine):
    """The host's mount table is the same before a VE starts and after it stops."""
    engine.create(VEConfig(101, "iso101", "busybox"))
    before = host_file("/proc/self/mountinfo")
    engine.start(101)
    ok(engine, 101, "sh", "-c", "mkdir -p /mnt && mount -t tmpfs inner /mnt")
    vectl(engine, "stop", 101, "--timeout", "5")
    assert engine.status(101).state == "stopped"
    assert host_file("/proc/self/mountinfo") == before
