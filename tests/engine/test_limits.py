"""Resource limits of real VEs hold under attack: memory, processes and CPU.

Each test runs a hostile workload in one VE and checks that the limit stops
it there, while a neighbour VE and the host keep answering.
"""

import os
import subprocess
import time
from pathlib import Path


from ve import Limits, VEConfig

from .conftest import vectl

CPU_HOG = "while :; do :; done"
MEMORY_HOG = "dd if=/dev/zero of=/dev/null bs=300M count=1"  # dd fills a bs-sized buffer


# -- helpers -------------------------------------------------------------------


def start_ve(engine, veid=101, **limits):
    """Create and start a busybox VE; return its init's host PID."""
    engine.create(VEConfig(veid, f"lim{veid}", "busybox", Limits(**limits)))
    return engine.start(veid)


def answers_quickly(engine, veid, within=5.0):
    """Tell whether the VE runs a command and answers within ``within`` seconds."""
    started = time.monotonic()
    result = engine.exec(veid, ["echo", "alive"])
    return result.returncode == 0 and result.stdout == b"alive\n" \
        and time.monotonic() - started < within


def host_answers_quickly(within=2.0):
    """Tell whether the host forks and runs a command within ``within`` seconds."""
    started = time.monotonic()
    done = subprocess.run(["true"], timeout=30)
    return done.returncode == 0 and time.monotonic() - started < within


def start_background(engine, veid, script):
    """Start ``script`` detached inside the VE (its output goes to /dev/null)."""
    result = engine.exec(veid, ["sh", "-c", f"({script}) >/dev/null 2>&1 &"])
    assert result.returncode == 0, result.stderr


def cpu_share(engine, veids, seconds):
    """Return {veid: CPU time used / wall time} over ``seconds``, measured together."""
    first = {veid: engine.status(veid).cpu_ns for veid in veids}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {veid: (engine.status(veid).cpu_ns - first[veid]) / 1e9 / elapsed for veid in veids}


def is_running(engine, veid, init_pid):
    status = engine.status(veid)
    return status.state == "running" and status.init_pid == init_pid


def pids_in_namespace(ns_link):
    """Host PIDs whose PID namespace is ``ns_link`` (a readlink of /proc/PID/ns/pid)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink(f"/proc/{entry}/ns/pid") == ns_link:
                found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass  # gone, or a host process we may not inspect (so not a VE's)
    return found


def forks_refused(engine, veid):
    """Return how many forks the pids controller refused in the VE (pids.events "max")."""
    for procs in engine.cgroups.procs_files(str(veid)):
        events = Path(procs).with_name("pids.events")
        if events.exists():
            counts = dict(line.split() for line in events.read_text().splitlines())
            return int(counts["max"])
    raise AssertionError("the VE has no pids.events file")


def wait_gone(ns_link, timeout=5.0):
    """Wait until no process is left in PID namespace ``ns_link``; tell whether none is."""
    deadline = time.monotonic() + timeout
    while pids_in_namespace(ns_link):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- memory --------------------------------------------------------------------


def test_memory_hog_is_oom_killed_inside_its_ve_only(engine):
    """A memory hog in a 64 MiB VE without swap is OOM-killed there; nothing else suffers."""
    init = start_ve(engine, ram="64M", swap=0)
    neighbour = start_ve(engine, 102)
    # Through the CLI: its small helper process is never the OOM killer's pick
    # (see test_oom_kill_spares_the_exec_helper_of_a_large_caller).
    hog = vectl(engine, "exec", 101, "sh", "-c", f"{MEMORY_HOG}; echo hog_status=$?")
    assert hog.stdout.strip() == "hog_status=137", "the hog was not SIGKILLed"
    status = engine.status(101)
    assert status.oom_kills >= 1
    assert status.ram_used <= 64 << 20
    assert is_running(engine, 101, init) and answers_quickly(engine, 101)
    assert is_running(engine, 102, neighbour) and answers_quickly(engine, 102)
    assert engine.status(102).oom_kills == 0
    assert host_answers_quickly()


def test_oom_kill_spares_the_exec_helper_of_a_large_caller(engine):
    """An OOM in a VE kills the VE's hog, not the exec helper of a big caller (a worker)."""
    start_ve(engine, ram="64M", swap=0)
    ballast = b"\x01" * (256 << 20)  # a caller as big as a long-lived worker process
    try:
        result = engine.exec(101, ["sh", "-c", f"{MEMORY_HOG}; echo hog_status=$?"])
    finally:
        del ballast
    assert (result.returncode, result.stdout) == (0, b"hog_status=137\n")
    assert engine.status(101).oom_kills == 1


# -- processes -----------------------------------------------------------------


def test_fork_bomb_stops_at_the_process_limit(engine):
    """A fork bomb never exceeds numproc; the neighbour and host answer; stop leaves nothing."""
    limit = 64
    init = start_ve(engine, numproc=limit)
    neighbour = start_ve(engine, 102)
    ns_link = os.readlink(f"/proc/{init}/ns/pid")
    # Every shell forks twice, then sleeps: those that fit keep their slots.
    start_background(engine, 101, "bomb() { bomb & bomb & sleep 1000; }; bomb")
    peak, deadline = 0, time.monotonic() + 2.0
    while time.monotonic() < deadline:
        peak = max(peak, engine.status(101).nproc)
        time.sleep(0.02)
    assert limit // 4 <= peak <= limit, f"peak {peak} processes"
    assert forks_refused(engine, 101) > 0, "the bomb never reached the limit"
    assert engine.status(101).nproc <= limit
    assert answers_quickly(engine, 102) and is_running(engine, 102, neighbour)
    assert host_answers_quickly()
    started = time.monotonic()
    engine.stop(101, timeout=2)
    assert time.monotonic() - started < 15
    assert engine.status(101).state == "stopped"
    assert not engine.cgroups.exists("101")
    assert wait_gone(ns_link), "bomb processes outlived the stop"


# -- CPU -----------------------------------------------------------------------


def test_cpu_hog_is_throttled_to_its_cpulimit(engine):
    """A CPU hog with cpulimit=25 gets 15-35% of one CPU; an unlimited neighbour gets more."""
    start_ve(engine, cpulimit=25)
    start_ve(engine, 102)
    for veid in (101, 102):
        start_background(engine, veid, CPU_HOG)
    time.sleep(0.5)  # let both hogs get going
    share = cpu_share(engine, (101, 102), 3.0)
    assert 0.15 <= share[101] <= 0.35, f"limited VE used {share[101]:.0%} of a CPU"
    assert share[102] >= 1.5 * share[101], f"unlimited neighbour only got {share[102]:.0%}"
    assert answers_quickly(engine, 102) and host_answers_quickly()


def test_lowering_cpulimit_live_throttles_a_running_hog(engine):
    """`vectl set --cpulimit` on a running VE takes effect on the hog already running."""
    start_ve(engine, cpulimit=80)
    start_background(engine, 101, CPU_HOG)
    time.sleep(0.5)
    before = cpu_share(engine, (101,), 2.0)[101]
    assert before >= 0.55, f"the hog used only {before:.0%} of a CPU before the change"
    vectl(engine, "set", 101, "--cpulimit", "20")
    time.sleep(0.3)  # one CFS period or so for the new quota to bite
    after = cpu_share(engine, (101,), 2.0)[101]
    assert 0.10 <= after <= 0.30, f"the hog used {after:.0%} of a CPU after cpulimit=20"
    assert engine.config(101).limits.cpulimit == 20
