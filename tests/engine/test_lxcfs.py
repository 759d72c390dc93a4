"""A VE's /proc shows its own limits and life through the node's lxcfs.

Real VEs and a real lxcfs (Debian's, started by ``LxcfsSupervisor`` on a
directory of this session): the VE reads its RAM, CPUs, uptime and load,
keeps them across a live limit change, gets them back after lxcfs is killed
or hangs, falls back to the kernel's files when no lxcfs can be had, and
starts without lxcfs at all.
"""

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ve import Limits, VEConfig
from ve.kernel import lxcfs_mounts
from ve.watch.lxcfs import LxcfsSupervisor

from .conftest import require_root, wait_for

NOT_CONNECTED = "Transport endpoint is not connected"


@pytest.fixture(scope="session")
def lxcfs_node(tmp_path_factory):
    """A supervisor and its lxcfs on a world-traversable directory, gone after the session."""
    require_root()
    if shutil.which("lxcfs") is None:
        pytest.skip("lxcfs is not installed (make test installs Debian's lxcfs package)")
    top = tempfile.mkdtemp(prefix="vetest-lxcfs-", dir="/run")  # /tmp/pytest-of-root is 0700
    os.chmod(top, 0o755)
    node_root = tmp_path_factory.mktemp("lxcfs-node")
    supervisor = LxcfsSupervisor(node_root, f"{top}/lxcfs")
    try:
        assert supervisor.ensure() == f"{top}/lxcfs"
        assert supervisor.pid() and supervisor.pidfile == node_root / "run" / "lxcfs.pid"
        yield supervisor
    finally:
        supervisor.stop()
        left = lxcfs_mounts.mounted_device(supervisor.dir)
        shutil.rmtree(top)
        Path(supervisor.lock_path).unlink(missing_ok=True)
        assert (left, supervisor.pid()) == (None, None), "the test lxcfs was left behind"


@pytest.fixture
def lxcfs(lxcfs_node, monkeypatch):
    """The session's supervisor with a serving lxcfs; VEs started now bind its files.

    No node watcher: it would supervise the same directory too, and the
    checks these tests make by hand must be the ones that act.
    """
    assert lxcfs_node.ensure() == lxcfs_node.dir
    monkeypatch.setenv("VE_LXCFS", lxcfs_node.dir)
    monkeypatch.setenv("VE_WATCH", "off")
    return lxcfs_node


def start_ve(engine, veid=101, **limits):
    """Create and start a busybox VE; return its init's host PID."""
    engine.create(VEConfig(veid, f"lxcfs{veid}", "busybox", Limits(**limits)))
    return engine.start(veid)


def inside(engine, veid, script):
    """Run ``script`` in the VE's shell; return (exit code, stdout, stderr) as text."""
    result = engine.exec(veid, ["sh", "-c", script], timeout=30)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def mem_total_kb(engine, veid):
    code, out, err = inside(engine, veid, "head -1 /proc/meminfo")
    assert code == 0, err
    assert out.startswith("MemTotal:"), out
    return int(out.split()[1])


def host_mem_total_kb():
    with open("/proc/meminfo") as handle:
        return int(handle.readline().split()[1])


def exited(pid, timeout=10.0):
    """Tell whether ``pid`` (not our child) exits within ``timeout`` seconds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(int(timeout * 1000)))
    finally:
        os.close(fd)


def kill_lxcfs(supervisor, sig=signal.SIGKILL):
    """Send ``sig`` to the supervisor's lxcfs (and wait for a killed one to be gone)."""
    pid = supervisor.pid()
    assert pid, "no lxcfs of the supervisor runs"
    os.kill(pid, sig)
    if sig == signal.SIGKILL:
        assert exited(pid)
    return pid


# -- what the VE sees ----------------------------------------------------------


def test_the_ve_sees_its_own_ram_cpus_uptime_and_load(engine, lxcfs):
    """Inside a 128 MiB, 1-CPU VE, /proc, top and nproc show 128 MiB, one CPU, its
    own uptime and load averages."""
    before = time.monotonic()
    pid = start_ve(engine, ram="128M", swap=0, cpus=1, cpulimit=50)
    assert mem_total_kb(engine, 101) == 131072
    code, out, err = inside(engine, 101, "top -bn1 | head -1")
    assert code == 0, err
    # "Mem: 2856K used, 128216K free, 0K shrd, ..."
    used, free = (int(word.rstrip("K")) for word in out.split()[1:5:2])
    assert used + free == 131072, out
    assert inside(engine, 101, "nproc")[1].strip() == "1"
    assert inside(engine, 101, "grep -c ^processor /proc/cpuinfo")[1].strip() == "1"
    assert inside(engine, 101, "cat /sys/devices/system/cpu/online")[1].strip() == "0"
    assert inside(engine, 101, "grep -c '^cpu[0-9]' /proc/stat")[1].strip() == "1"
    uptime = float(inside(engine, 101, "cat /proc/uptime")[1].split()[0])
    assert uptime <= time.monotonic() - before + 0.5  # not the host's: the VE's life so far
    load = inside(engine, 101, "cat /proc/loadavg")[1].split()
    assert len(load) == 5 and "/" in load[3], load
    assert lxcfs_mounts.bound_state(pid, lxcfs.dir) == "current"


def test_memtotal_follows_a_live_ram_change(engine, lxcfs):
    """Right after ``set --ram 256M`` the running VE's MemTotal is 256 MiB."""
    start_ve(engine, ram="128M", cpus=1)
    assert mem_total_kb(engine, 101) == 131072
    engine.set(101, ram="256M")
    assert mem_total_kb(engine, 101) == 262144


# -- lxcfs dies or hangs -------------------------------------------------------


def test_a_killed_lxcfs_is_restarted_and_the_ve_rebound(engine, lxcfs):
    """kill -9 of lxcfs breaks the VE's /proc files until the next check, which
    restarts lxcfs and binds the new one's files in the running VE."""
    pid = start_ve(engine, ram="128M", cpus=1)
    old = kill_lxcfs(lxcfs)
    code, _, err = inside(engine, 101, "head -1 /proc/meminfo")
    assert (code, NOT_CONNECTED in err) == (1, True), err

    done = lxcfs.check([(101, pid)])
    assert done == {"lxcfs": "restarted", "rebound": [101], "unbound": [], "failed": {}}
    assert lxcfs.pid() not in (None, old)
    assert mem_total_kb(engine, 101) == 131072
    assert inside(engine, 101, "cat /sys/devices/system/cpu/online")[1].strip() == "0"
    assert lxcfs_mounts.bound_state(pid, lxcfs.dir) == "current"
    assert lxcfs.check([(101, pid)])["lxcfs"] == "ok"  # and nothing more to do


def test_a_hung_lxcfs_is_replaced(engine, lxcfs):
    """An lxcfs that stops answering is killed and replaced, and the VE re-bound."""
    pid = start_ve(engine, ram="128M", cpus=1)
    old = kill_lxcfs(lxcfs, signal.SIGSTOP)
    done = lxcfs.check([(101, pid)])
    assert done == {"lxcfs": "restarted", "rebound": [101], "unbound": [], "failed": {}}
    assert exited(old)
    assert mem_total_kb(engine, 101) == 131072


def test_without_lxcfs_the_ve_reads_the_kernels_files_until_one_is_back(engine, lxcfs):
    """With lxcfs dead and not restartable the VE's binds are removed (the host's
    figures, but no errors); once lxcfs can run again the VE gets it back."""
    pid = start_ve(engine, ram="128M", cpus=1)
    kill_lxcfs(lxcfs)
    binary, lxcfs.binary = lxcfs.binary, "/nonexistent/lxcfs"
    try:
        done = lxcfs.check([(101, pid)])
    finally:
        lxcfs.binary = binary
    assert done == {"lxcfs": "unavailable", "rebound": [], "unbound": [101], "failed": {}}
    assert mem_total_kb(engine, 101) == host_mem_total_kb()
    code, _, err = inside(engine, 101, "cat /proc/uptime /proc/loadavg /proc/cpuinfo "
                                       "/sys/devices/system/cpu/online >/dev/null")
    assert code == 0, err
    assert lxcfs_mounts.bound_state(pid, lxcfs.dir) == "absent"

    # Even a new supervisor (the watcher was restarted meanwhile) binds it again.
    later = LxcfsSupervisor(lxcfs.run_dir.parent, lxcfs.dir)
    done = later.check([(101, pid)])
    assert done == {"lxcfs": "restarted", "rebound": [101], "unbound": [], "failed": {}}
    assert mem_total_kb(engine, 101) == 131072
    assert later.check([(101, pid)]) == {"lxcfs": "ok", "rebound": [], "unbound": [],
                                         "failed": {}}


# -- VEs without lxcfs ---------------------------------------------------------


def test_a_ve_starts_with_lxcfs_off(engine, lxcfs, monkeypatch):
    """VE_LXCFS=off: the VE starts with the kernel's /proc, and a supervisor of a
    node without lxcfs ("off") leaves it so."""
    monkeypatch.setenv("VE_LXCFS", "off")
    pid = start_ve(engine, ram="128M")
    assert mem_total_kb(engine, 101) == host_mem_total_kb()
    assert lxcfs_mounts.bound_state(pid, lxcfs.dir) == "absent"
    off = LxcfsSupervisor(lxcfs.run_dir.parent)
    assert (off.dir, off.ensure()) == ("off", None)
    assert off.check([(101, pid)]) == {"lxcfs": "off", "rebound": [], "unbound": [],
                                       "failed": {}}
    assert lxcfs_mounts.bound_state(pid, lxcfs.dir) == "absent"


def test_a_ve_started_while_no_lxcfs_serves_gets_it_later(engine, lxcfs):
    """A VE started while lxcfs is dead (or on a node without one) still starts,
    with the kernel's files; once an lxcfs serves, the next check binds its files."""
    kill_lxcfs(lxcfs)
    assert lxcfs_mounts.serving(lxcfs.dir) is None
    pid = start_ve(engine, ram="128M")
    assert mem_total_kb(engine, 101) == host_mem_total_kb()
    assert lxcfs_mounts.bound_state(pid, lxcfs.dir) == "absent"
    done = lxcfs.check([(101, pid)])
    assert done == {"lxcfs": "restarted", "rebound": [101], "unbound": [], "failed": {}}
    assert mem_total_kb(engine, 101) == 131072
    assert inside(engine, 101, "cat /sys/devices/system/cpu/online")[1].strip() != ""


def test_a_node_without_lxcfs_says_so(monkeypatch, tmp_path):
    """The node page warns when no lxcfs is installed."""
    from ve import host
    warning = "lxcfs is not installed: VEs see the host's /proc figures"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert warning in host.facts(str(tmp_path))["warnings"]
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    assert (warning in host.facts(str(tmp_path))["warnings"]) == (shutil.which("lxcfs") is None)


def test_only_a_ves_init_gets_binds_from_outside(lxcfs):
    """rebind and unbind refuse a PID that is not PID 1 of its own namespaces
    (a VE's init PID reused by a host process, say)."""
    for pid in (os.getpid(), 1):
        with pytest.raises(OSError):
            lxcfs_mounts.rebind(pid, lxcfs.dir)
        with pytest.raises(OSError):
            lxcfs_mounts.unbind(pid)
    with open("/proc/self/mountinfo") as handle:
        assert " /proc/meminfo " not in handle.read()


def test_a_hung_lxcfs_of_someone_else_is_cut_off(engine, lxcfs, tmp_path):
    """A hung lxcfs the supervisor did not start (a distribution's, say) cannot be
    killed by pid file: its FUSE connection is aborted through fusectl, and ours
    takes over."""
    lxcfs.stop()
    fusectl_was_mounted = bool(os.listdir("/sys/fs/fuse/connections"))
    foreign = subprocess.Popen(["lxcfs", "-f", "-p", str(tmp_path / "foreign.pid"), lxcfs.dir],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: lxcfs_mounts.serving(lxcfs.dir))
        pid = start_ve(engine, ram="128M", cpus=1)
        assert mem_total_kb(engine, 101) == 131072
        foreign.send_signal(signal.SIGSTOP)
        done = lxcfs.check([(101, pid)])
        assert done == {"lxcfs": "restarted", "rebound": [101], "unbound": [], "failed": {}}
        assert lxcfs.pid() not in (None, foreign.pid)
        assert mem_total_kb(engine, 101) == 131072
    finally:
        foreign.kill()
        foreign.wait()
        if not fusectl_was_mounted:
            subprocess.run(["umount", "/sys/fs/fuse/connections"], check=False)
