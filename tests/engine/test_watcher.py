"""The node watcher for real: reboot and power-off from inside, crashes, node boot,
the VE's own sysinfo(2), and a watcher that dies and comes back.

Each test runs ``vectl watch`` for its engine's VE_ROOT (VE_WATCH=on: the
engine uses it but never starts one of its own).
"""

import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from ve import Limits, VEConfig
from ve.paths import Layout
from ve import watch

from .conftest import ROOT_DIR, vectl, wait_for
from .test_lxcfs import lxcfs_node  # noqa: F401  (fixture)

MiB = 1 << 20
SMALL = dict(diskspace=128 * MiB, diskinodes=16384)


class WatcherProcess:
    """``vectl watch`` for one engine's node, as a service would run it."""

    def __init__(self, engine, *options, netns=None):
        """``netns``: a network namespace (path) to run in, where the VEs' host sides are."""
        self.engine = engine
        env = dict(os.environ, VE_ROOT=str(engine.layout.root),
                   VE_CGROUP_PARENT=engine.cgroups.parent, PYTHONPATH=str(ROOT_DIR))
        self.log = open(engine.layout.root / "watcher-test.log", "ab")
        inside = ["nsenter", f"--net={netns}"] if netns else []
        self.proc = subprocess.Popen([*inside, sys.executable, "-m", "ve.cli", "watch", *options],
                                     env=env, stdout=self.log, stderr=self.log)
        assert wait_for(lambda: watch.running(engine.layout), 15), self.output()

    def pids(self):
        """The watcher and its holder (and whatever replaced them), by their command lines."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        environ = f.read().split(b"\0")
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmdline = f.read()
                except OSError:
                    continue
                if b"ve.cli\0watch" in cmdline and \
                        f"VE_ROOT={self.engine.layout.root}".encode() in environ:
                    found.append(int(entry))
        return sorted(found)

    def output(self):
        self.log.flush()
        return (self.engine.layout.root / "watcher-test.log").read_text()[-3000:]

    def stop(self):
        """Stop the watcher serving the node and its twin (``vectl watch --stop``)."""
        try:
            watch.request(self.engine.layout, {"op": "stop"})
        except OSError:
            pass  # none serves: the test killed it
        wait_for(lambda: not self.pids(), 15)
        for pid in self.pids():  # one that would not stop
            os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture
def watcher(engine, monkeypatch):
    monkeypatch.setenv("VE_WATCH", "on")
    running = WatcherProcess(engine)
    yield running
    running.stop()


def make(engine, veid=101, **limits):
    engine.create(VEConfig(veid, f"w{veid}.example", "busybox", Limits(**{**SMALL, **limits})))
    return engine.start(veid)


def new_init(engine, veid, old_pid):
    """Wait for the VE to run again under another init; return its PID (None if not)."""
    def running_anew():
        status = engine.status(veid)
        return status.state == "running" and status.init_pid != old_pid and status.init_pid
    return wait_for(running_anew, 30)


def stopped(engine, veid):
    return wait_for(lambda: engine.status(veid).state == "stopped", 30)


def events_of(engine, veid):
    return [e for e in engine.events() if e["veid"] == veid]


def leftovers(engine, veid):
    """What a stopped VE must not leave behind: run file, mount, cgroup."""
    found = []
    if engine.layout.state(veid).exists():
        found.append("run file")
    if os.path.ismount(engine.layout.private(veid)):
        found.append("mounted disk")
    if engine.cgroups.exists(str(veid)):
        found.append("cgroup")
    return found


def test_reboot_inside_comes_back_with_a_new_init_and_the_same_ve(engine, watcher):
    old = make(engine, ram=192 * MiB)
    engine.exec(101, ["sh", "-c", "echo kept > /root/marker"])
    assert engine.exec(101, ["reboot"]).returncode == 0
    pid = new_init(engine, 101, old)
    assert pid, watcher.output()
    assert engine.exec(101, ["cat", "/root/marker"]).stdout == b"kept\n"
    limit = engine.cgroups.file_path("101", "memory.limit_in_bytes"
                                     if engine.cgroups.version == 1 else "memory.max")
    assert int(open(limit).read()) == 192 * MiB
    assert wait_for(lambda: events_of(engine, 101), 10)  # written once it runs again
    (event,) = events_of(engine, 101)
    assert (event["reason"], event["restarted"], event["init_pid"], event["new_pid"]) == \
        ("reboot", True, old, pid)


@pytest.mark.parametrize("command", ["poweroff", "halt"])
def test_poweroff_inside_stays_off_and_is_cleaned_up_at_once(engine, watcher, command):
    make(engine)
    assert engine.exec(101, [command]).returncode == 0
    assert stopped(engine, 101)
    assert wait_for(lambda: not leftovers(engine, 101), 10), leftovers(engine, 101)
    assert wait_for(lambda: events_of(engine, 101), 10)  # written once all is clean
    (event,) = events_of(engine, 101)
    assert (event["reason"], event["restarted"]) == ("poweroff", False)
    assert engine.status(101).state == "stopped"


def test_a_crash_is_recorded_and_not_restarted(engine, watcher):
    pid = make(engine)
    os.kill(pid, signal.SIGKILL)
    assert stopped(engine, 101)
    assert wait_for(lambda: events_of(engine, 101), 10)
    (event,) = events_of(engine, 101)
    assert (event["reason"], event["restarted"]) == ("crash", False)
    assert wait_for(lambda: not leftovers(engine, 101), 10), leftovers(engine, 101)
    engine.forget_event(event["id"])
    assert events_of(engine, 101) == []


def test_a_stop_from_the_host_is_no_event(engine, watcher):
    make(engine)
    engine.stop(101, timeout=5)
    engine.start(101)
    engine.restart(101, timeout=5)
    assert engine.status(101).state == "running"
    assert events_of(engine, 101) == []


def test_the_ves_outlive_a_killed_watcher_whose_twin_takes_over(engine, watcher):
    old = make(engine)
    # The watcher and its listener holder (and now and then a short-lived helper of theirs).
    assert wait_for(lambda: len(watcher.pids()) == 2, 10)
    os.kill(watcher.proc.pid, signal.SIGKILL)
    watcher.proc.wait()
    assert engine.status(101).state == "running"
    assert wait_for(lambda: watch.running(engine.layout) and len(watcher.pids()) == 2, 15)
    assert engine.status(101).init_pid == old
    # The new watcher still sees a reboot from inside and answers sysinfo.
    assert b"131072" not in engine.exec(101, ["free"]).stdout  # the default 256 MiB limit
    assert b"262144" in engine.exec(101, ["free"]).stdout
    engine.exec(101, ["reboot"])
    assert new_init(engine, 101, old), watcher.output()


def test_a_second_watcher_takes_the_node_over_with_every_listener(engine, watcher):
    """A restarted or upgraded service: the old watcher hands over and exits."""
    old = make(engine)
    first = watcher.proc
    second = WatcherProcess(engine)
    try:
        assert first.wait(timeout=20) == 0, watcher.output()
        assert wait_for(lambda: watch.running(engine.layout), 10)
        assert engine.status(101).init_pid == old
        assert b"262144" in engine.exec(101, ["free"]).stdout  # still answered
        engine.exec(101, ["reboot"])
        assert new_init(engine, 101, old), second.output()
        assert wait_for(lambda: len(second.pids()) == 2, 10)  # the new watcher and its twin
    finally:
        second.stop()


def test_a_stopped_watcher_leaves_its_twin_on_duty_while_ves_run(engine, watcher):
    """SIGTERM (a service stop) must not take the running VEs' notifiers with it: the
    twin carries on; `vectl watch --stop` stops both; with nothing running, SIGTERM does."""
    make(engine, ram=128 * MiB)
    watcher.proc.terminate()
    assert watcher.proc.wait(timeout=20) == 0
    assert wait_for(lambda: watch.running(engine.layout), 10), watcher.output()
    assert b"131072" in engine.exec(101, ["free"]).stdout  # still the VE's own answer
    assert "stopped" in vectl(engine, "watch", "--stop").stdout
    assert not watch.running(engine.layout) and wait_for(lambda: not watcher.pids(), 10)
    engine.stop(101, fast=True)
    alone = WatcherProcess(engine)
    alone.proc.terminate()
    assert alone.proc.wait(timeout=20) == 0
    assert wait_for(lambda: not alone.pids(), 10)  # no VE needed it: the twin quit too
    alone.stop()


def _steal_listeners(pid):
    """Copies of the seccomp listeners a process holds (pidfd_getfd), as the test's own."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    copies = []
    pidfd = os.pidfd_open(pid)
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:seccomp notify":
                    continue
            except OSError:
                continue
            copy = libc.syscall(438, pidfd, int(fd), 0)  # pidfd_getfd
            assert copy >= 0, os.strerror(ctypes.get_errno())
            copies.append(copy)
    finally:
        os.close(pidfd)
    return copies


def test_a_call_the_dead_watcher_had_taken_is_asked_again(engine, watcher, sysinfo_probe):
    """A watcher killed between taking a notification and answering it: the kernel
    never hands that notification out again, so the next watcher wakes the waiting
    task (SIGSTOP, SIGCONT), which asks anew and gets its answer."""
    from ve.kernel import seccomp
    make(engine, ram=128 * MiB)
    assert engine.exec(101, ["sh", "-c", "cat > /bin/sysinfo && chmod 755 /bin/sysinfo"],
                       input=sysinfo_probe).returncode == 0
    # Under a notifier the watcher holds: it asks once /tmp/go appears.
    engine.exec(101, ["sh", "-c", "(while [ ! -e /tmp/go ]; do sleep 0.05; done; "
                                  "/bin/sysinfo > /tmp/answer) >/dev/null 2>&1 &"])
    main = min(watcher.pids())  # the watcher (its twin is its child, with a higher PID)
    os.kill(main, signal.SIGSTOP)
    listeners = []
    try:
        listeners = _steal_listeners(main)
        engine.exec(101, ["touch", "/tmp/go"])  # no watcher answers: a plain command
        readable = select.select(listeners, [], [], 10)[0]
        assert readable, "no notification came"
        taken = seccomp.receive(readable[0])  # taken, never answered: as by a dying watcher
        assert taken is not None and taken.call == "sysinfo"
        os.kill(main, signal.SIGKILL)
    finally:
        os.kill(main, signal.SIGCONT)
        for fd in listeners:
            os.close(fd)

    def answered():
        return engine.exec(101, ["cat", "/tmp/answer"]).stdout.startswith(b"total")
    assert wait_for(answered, 20), watcher.output()
    assert f"total {128 * MiB} ".encode() in engine.exec(101, ["cat", "/tmp/answer"]).stdout

def test_a_new_watcher_catches_up_with_what_ended_while_none_ran(engine, watcher):
    pid = make(engine)
    for proc in watcher.pids():
        os.kill(proc, signal.SIGKILL)  # the watcher and its twin at once
    watcher.proc.wait()
    assert wait_for(lambda: not watcher.pids(), 5)
    assert engine.status(101).state == "running"  # VEs keep running without a watcher
    os.kill(pid, signal.SIGKILL)  # it ends while nobody watches
    assert wait_for(lambda: engine.status(101).state == "stopped", 10)
    assert leftovers(engine, 101)  # nobody cleaned up yet
    replacement = WatcherProcess(engine)
    try:
        assert wait_for(lambda: not leftovers(engine, 101), 15), replacement.output()
        assert wait_for(lambda: events_of(engine, 101), 10)  # written after the clean-up
        (event,) = events_of(engine, 101)
        assert event["reason"] == "unknown"  # nobody saw why
    finally:
        replacement.stop()


def test_onboot_ves_start_once_per_boot_in_boot_order(engine, tmp_path):
    for veid, onboot, order in ((101, True, 0), (102, True, 10), (103, False, 50)):
        engine.create(VEConfig(veid, f"b{veid}.example", "busybox", Limits(**SMALL),
                               onboot=onboot, bootorder=order))
    assert engine.boot() == [102, 101]
    assert [engine.status(v).state for v in (101, 102, 103)] == ["running", "running", "stopped"]
    engine.stop(101, fast=True)
    assert engine.boot() == []  # the same boot: a VE stopped since stays stopped
    assert engine.status(101).state == "stopped"
    vectl(engine, "set", "103", "--onboot", "yes", "--bootorder", "3")
    assert (engine.config(103).onboot, engine.config(103).bootorder) == (True, 3)
    (engine.layout.run_dir / "booted").write_text("an-earlier-boot\n")
    assert engine.boot() == [103, 101]


@pytest.fixture(scope="module")
def sysinfo_probe(tmp_path_factory):
    """A static program printing what sysinfo(2) and sysconf(_SC_PHYS_PAGES) tell it
    (what busybox free and a JVM sizing its heap see)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is missing: `make test` installs gcc and libc6-dev")
    directory = tmp_path_factory.mktemp("sysinfo")
    (directory / "p.c").write_text(textwrap.dedent("""
        #include <stdio.h>
        #include <sys/sysinfo.h>
        #include <unistd.h>
        int main(void) {
            struct sysinfo s;
            if (sysinfo(&s)) return 1;
            printf("total %llu free %llu swap %llu procs %u uptime %ld phys %lld\\n",
                   (unsigned long long)s.totalram * s.mem_unit,
                   (unsigned long long)s.freeram * s.mem_unit,
                   (unsigned long long)s.totalswap * s.mem_unit, s.procs, s.uptime,
                   (long long)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE));
            return 0;
        }"""))
    out = subprocess.run([gcc, "-static", "-O2", "-o", str(directory / "p"),
                          str(directory / "p.c")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return (directory / "p").read_bytes()


def host_swap():
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("SwapTotal:"))


def sysinfo_inside(engine, veid, path="/bin/sysinfo"):
    words = engine.exec(veid, [path]).stdout.decode().split()
    return {key: int(value) for key, value in zip(words[::2], words[1::2])}


def test_sysinfo_inside_tells_the_ves_own_memory_and_life(engine, watcher, sysinfo_probe):
    make(engine, ram=128 * MiB, swap=64 * MiB)
    assert engine.exec(101, ["sh", "-c", "cat > /bin/sysinfo && chmod 755 /bin/sysinfo"],
                       input=sysinfo_probe).returncode == 0
    seen = sysinfo_inside(engine, 101)
    assert seen["total"] == seen["phys"] == 128 * MiB
    assert seen["swap"] == min(64 * MiB, host_swap())  # no more than the host has
    assert 0 < seen["free"] < 128 * MiB
    assert 1 <= seen["procs"] <= 10 and seen["uptime"] < 60  # the VE's, not the host's
    assert b"up 0 min" in engine.exec(101, ["uptime"]).stdout  # busybox: sysinfo too
    # A process of the VE's own (a child of its init) asks too, not just exec'd ones.
    engine.exec(101, ["sh", "-c", "(sleep 1; /bin/sysinfo > /tmp/by-init) &"])
    assert wait_for(lambda: engine.exec(101, ["cat", "/tmp/by-init"]).stdout.strip(), 10)
    assert f"total {128 * MiB} ".encode() in engine.exec(101, ["cat", "/tmp/by-init"]).stdout
    engine.set(101, ram="256M")  # live: the next call knows
    assert sysinfo_inside(engine, 101)["total"] == 256 * MiB


def _free_mib(engine, veid):
    """busybox free -m's total and used RAM (it mixes sysinfo(2) and /proc/meminfo)."""
    line = engine.exec(veid, ["free", "-m"]).stdout.decode().splitlines()[1]
    return int(line.split()[1]), int(line.split()[2])


def test_the_ve_sees_its_own_resources_and_keeps_them_when_lxcfs_dies(
        engine, lxcfs_node, monkeypatch):
    """free, nproc, uptime and /proc/loadavg tell the VE's own limits and life (LXCFS for
    /proc, the watcher for sysinfo), also after a live change and a killed lxcfs."""
    from ve.watch.lxcfs import LxcfsSupervisor
    monkeypatch.setenv("VE_LXCFS", lxcfs_node.dir)
    monkeypatch.setenv("VE_WATCH", "on")
    assert lxcfs_node.ensure() == lxcfs_node.dir
    running = WatcherProcess(engine)
    try:
        make(engine, ram=128 * MiB, cpus=1)
        total, used = _free_mib(engine, 101)
        assert total == 128 and 0 <= used < 64  # a busybox VE's own use rounds to 0-1 MiB
        assert engine.exec(101, ["nproc"]).stdout.strip() == b"1"
        assert b"up 0 min" in engine.exec(101, ["uptime"]).stdout
        assert float(engine.exec(101, ["cat", "/proc/uptime"]).stdout.split()[0]) < 60
        assert len(engine.exec(101, ["cat", "/proc/loadavg"]).stdout.split()) == 5
        engine.set(101, ram="256M")
        assert _free_mib(engine, 101)[0] == 256
        os.kill(lxcfs_node.pid(), signal.SIGKILL)  # the watcher notices and re-binds

        def meminfo_again():
            out = engine.exec(101, ["head", "-1", "/proc/meminfo"])
            return out.returncode == 0 and out.stdout.split()[1] == b"262144"
        assert wait_for(meminfo_again, 30), running.output()
        assert _free_mib(engine, 101)[0] == 256
    finally:
        running.stop()
        LxcfsSupervisor(engine.layout, lxcfs_node.dir).stop()  # the one the watcher started


def test_vectl_alone_starts_a_watcher_and_a_reboot_comes_back(engine, monkeypatch):
    """No service runs the watcher: `vectl start` starts one, which reboots the VE."""
    monkeypatch.setenv("VE_WATCH", "auto")
    vectl(engine, "create", "101", "--template", "busybox", "--hostname", "alone.example",
          "--diskspace", "128M", "--diskinodes", "16384")
    try:
        vectl(engine, "start", "101")
        assert watch.running(engine.layout)
        old = engine.status(101).init_pid
        vectl(engine, "exec", "101", "reboot")
        assert new_init(engine, 101, old)
        # (recorded once it runs again)
        assert wait_for(lambda: "reboot" in vectl(engine, "events").stdout, 10)
    finally:
        assert "stopped" in vectl(engine, "watch", "--stop").stdout
        assert not watch.running(Layout(engine.layout.root))


def test_the_node_page_says_when_no_watcher_runs(engine, monkeypatch):
    from ve import host
    monkeypatch.setenv("VE_WATCH", "on")
    root = str(engine.layout.root)
    assert any("no node watcher runs" in w for w in host.facts(root)["warnings"])
    running = WatcherProcess(engine)
    try:
        assert not any("no node watcher runs" in w for w in host.facts(root)["warnings"])
    finally:
        running.stop()
