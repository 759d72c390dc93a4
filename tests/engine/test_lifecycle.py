"""Lifecycle of real VEs: create, start, exec, list, set, restart, stop, destroy."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ve import Limits, VEConfig
from ve.errors import AlreadyExists, NotFound, ResourceError, StateError
from ve.kernel import proc

from .conftest import vectl


def make(engine, veid=101, hostname="web1", **limits):
    cfg = VEConfig(veid, hostname, "busybox", Limits(**limits))
    engine.create(cfg)
    return cfg


def test_init_is_pid_1_inside_and_an_ordinary_pid_on_the_host(engine):
    """The VE's init is PID 1 in its namespace; `vectl pid` maps the host PID back."""
    make(engine)
    host_pid = engine.start(101)
    assert host_pid != 1
    assert proc.innermost_pid(host_pid) == 1
    ps = engine.exec(101, ["ps", "-o", "pid,comm"])
    assert ps.returncode == 0
    rows = [line.split() for line in ps.stdout.decode().splitlines()[1:]]
    assert ["1", "init"] in rows
    assert all(int(pid) < 100 for pid, _ in rows), "host processes leaked into the VE"
    out = vectl(engine, "pid", host_pid, 1).stdout.splitlines()
    assert out[0].split() == ["Pid", "VEID", "Name"]
    assert out[1].split() == [str(host_pid), "101", "init"]
    assert out[2].split()[:2] == ["1", "0"]


def test_init_is_in_the_ves_cgroup_in_every_hierarchy(engine):
    """Init joins its cgroups (through v1 `tasks`) in every mounted hierarchy."""
    make(engine)
    pid = engine.start(101)
    lines = [line.split(":", 2) for line in open(f"/proc/{pid}/cgroup").read().splitlines()]
    wanted = {"memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer"}
    placed = {c for _, controllers, path in lines for c in controllers.split(",")
              if path == f"/{engine.cgroups.parent}/101"}
    assert wanted <= placed
    assert pid in engine.cgroups.pids("101")


def test_on_a_hybrid_host_init_is_born_in_the_ves_unified_group_too(engine):
    """Where a cgroup2 hierarchy is mounted beside the v1 ones, init is in the VE's
    group there as well (its setup process is cloned into it, never moved)."""
    target = engine.cgroups.clone_target("101")
    if target is None:
        pytest.skip("no cgroup2 hierarchy beside the v1 ones on this host")
    make(engine)
    pid = engine.start(101)
    lines = open(f"/proc/{pid}/cgroup").read().splitlines()
    assert f"0::/{engine.cgroups.parent}/101" in lines
    assert all(line.endswith(f":/{engine.cgroups.parent}/101") for line in lines)


def test_init_starts_with_no_signal_ignored_or_blocked_and_no_host_descriptor(engine):
    """The engine's own process ignores SIGPIPE (Python does): the VE's init must not
    inherit that, nor any descriptor of the engine's beyond stdio. (Its init here is
    `sleep`, which changes neither; busybox init blocks signals and opens files.)"""
    from ve.storage import templates
    engine.template_import("sleeper", templates.cache_path(engine.layout.cache_dir, "busybox"),
                           init=("/bin/busybox", "sleep", "600"))
    engine.create(VEConfig(101, "web1", "sleeper"))
    pid = engine.start(101)
    status = dict(line.split(":\t", 1) for line in
                  open(f"/proc/{pid}/status").read().splitlines() if ":\t" in line)
    assert int(status["SigBlk"], 16) == 0
    assert int(status["SigIgn"], 16) == 0
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]


def test_ps_grep_init_pipeline_lists_every_ve_init(engine):
    """`ps -A | grep -w init | awk '{print $1}' | xargs vectl pid` names each VE's init."""
    make(engine, 101)
    make(engine, 102, hostname="web2")
    pids = {101: engine.start(101), 102: engine.start(102)}
    env = dict(os.environ, VE_ROOT=str(engine.layout.root),
               VE_CGROUP_PARENT=engine.cgroups.parent)
    vectl_cmd = f"{os.environ.get('VECTL', 'vectl')}"
    shell = f"ps -A | grep -w init | awk '{{print $1}}' | xargs {vectl_cmd} pid"
    out = subprocess.run(["sh", "-c", shell], env=env, capture_output=True, text=True,
                         timeout=60).stdout
    rows = {tuple(line.split()) for line in out.splitlines()[1:]}
    for veid, pid in pids.items():
        assert (str(pid), str(veid), "init") in rows


def test_hostname_and_limits_are_applied_and_listed(engine):
    make(engine, ram="128M", numproc=100, cpulimit=50)
    engine.start(101)
    assert engine.exec(101, ["hostname"]).stdout.decode().strip() == "web1"
    status = engine.status(101)
    assert status.state == "running"
    assert status.ram_limit == 128 << 20
    assert 1 <= status.nproc < 10
    assert status.ram_used > 0
    listed = json.loads(vectl(engine, "list", "--json").stdout)
    assert [s["veid"] for s in listed] == [101]
    assert "running" in vectl(engine, "list").stdout


def test_set_applies_live_and_persists(engine):
    make(engine, ram="128M")
    engine.start(101)
    vectl(engine, "set", 101, "--ram", "256M", "--cpulimit", "100", "--hostname", "web9")
    assert engine.status(101).ram_limit == 256 << 20
    usage_limit = engine.cgroups.usage("101").memory_limit
    assert usage_limit == 256 << 20
    assert engine.exec(101, ["hostname"]).stdout.decode().strip() == "web9"
    saved = engine.config(101)
    assert saved.limits.ram == 256 << 20 and saved.limits.cpulimit == 100
    assert saved.hostname == "web9"


def test_verbs_converge(engine):
    """Start on a running VE, stop on a stopped VE, create with the same config are no-ops."""
    cfg = make(engine)
    assert engine.create(cfg) == engine.config(101)  # as saved: the layout made concrete
    first = engine.start(101)
    assert engine.start(101) == first
    engine.stop(101)
    engine.stop(101)
    engine.destroy(101)
    engine.destroy(101)
    with pytest.raises(NotFound):
        engine.status(101)


def test_duplicate_veid_with_other_config_is_refused(engine):
    make(engine)
    with pytest.raises(AlreadyExists):
        engine.create(VEConfig(101, "other", "busybox"))
    assert engine.config(101).hostname == "web1"


def test_restart_gives_a_new_init(engine):
    make(engine)
    first = engine.start(101)
    out = vectl(engine, "restart", 101, "--json").stdout
    second = json.loads(out)["init_pid"]
    assert second != first and not proc.is_alive(first, proc.start_time(first) or -1)
    assert engine.status(101).init_pid == second


def test_stop_is_clean_and_leaves_nothing(engine):
    """A clean stop ends every process and removes the cgroup; destroy removes every file."""
    make(engine)
    pid = engine.start(101)
    engine.exec(101, ["sh", "-c", "sleep 1000 >/dev/null 2>&1 &"])
    started = time.monotonic()
    vectl(engine, "stop", 101)
    assert time.monotonic() - started < 20, "busybox init should honour its stop signal"
    assert not os.path.exists(f"/proc/{pid}") or proc.start_time(pid) is None or \
        open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    assert not engine.cgroups.exists("101")
    assert engine.status(101).state == "stopped"
    vectl(engine, "destroy", 101)
    leftovers = [p for p in engine.layout.root.rglob("*") if "101" in p.name]
    assert leftovers == []
    assert not engine.cgroups.exists("101")


def test_exec_returns_the_commands_exit_code_and_stdin(engine):
    make(engine)
    engine.start(101)
    result = engine.exec(101, ["sh", "-c", "cat; exit 7"], input=b"hello")
    assert result.returncode == 7 and result.stdout == b"hello"
    cli = vectl(engine, "exec", 101, "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (cli.returncode, cli.stdout, cli.stderr) == (3, "out\n", "err\n")


def test_exec_on_stopped_ve_is_a_state_error(engine):
    make(engine)
    with pytest.raises(StateError):
        engine.exec(101, ["true"])
    assert vectl(engine, "exec", 101, "true", check=False).returncode == 5


def test_list_tells_the_truth_after_a_crash(engine):
    """A run file pointing at a dead or reused PID does not make a VE look running."""
    make(engine)
    pid = engine.start(101)
    state_file = engine.layout.state(101)
    record = json.loads(state_file.read_text())
    # A PID that is alive but is not our init (a start time that does not match).
    record.update(pid=os.getpid())
    state_file.write_text(json.dumps(record))
    assert engine.status(101).init_pid == pid  # found again through its cgroup
    engine.cgroups.kill("101")
    time.sleep(0.2)
    assert engine.status(101).state == "stopped"
    assert "101" not in vectl(engine, "list").stdout.split()


def test_one_action_per_ve_at_a_time(engine):
    """While one process holds a VE's lock, another action on it waits, then gives up."""
    from ve import state
    import ve.engine.lifecycle as engine_module
    make(engine)
    old = engine_module.LOCK_TIMEOUT
    engine_module.LOCK_TIMEOUT = 0.3
    try:
        with state.locked(engine.layout.lock(101), 101, 1):
            with pytest.raises(StateError):
                engine.start(101)
    finally:
        engine_module.LOCK_TIMEOUT = old
    assert engine.status(101).state == "stopped"


def test_enter_gives_a_shell_on_a_terminal_of_the_ve(engine):
    """`vectl enter` runs a login shell inside, on a pty from the VE's own devpts."""
    import pty
    make(engine)
    engine.start(101)
    env = dict(os.environ, VE_ROOT=str(engine.layout.root),
               VE_CGROUP_PARENT=engine.cgroups.parent, TERM="xterm")
    pid, master = pty.fork()
    if pid == 0:
        os.execvpe("vectl", ["vectl", "enter", "101"], env)
    output = _read_until(master, b"# ")  # the root prompt
    os.write(master, b"echo HOST=$(hostname) TTY=$(tty); exit 5\n")
    output += _read_until(master, None)
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert "HOST=web1 TTY=/dev/pts/0" in text
    assert os.waitstatus_to_exitcode(status) == 5


def _read_until(fd, marker, timeout=20):
    """Read from a pty master until ``marker`` shows up, EOF, or ``timeout``."""
    import select
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (marker is None or marker not in output):
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        output += chunk
    return output


def test_no_host_process_stays_behind_for_a_running_ve(engine):
    """A running VE costs the host only its own processes: no supervisor per VE."""
    make(engine)
    others = set(_children_of(os.getpid()))  # e.g. the end-to-end tests' stack
    pid = engine.start(101)
    with open(f"/proc/{pid}/status") as handle:
        ppid = int(next(line for line in handle if line.startswith("PPid:")).split()[1])
    assert ppid != os.getpid(), "the engine must not stay the VE's parent"
    assert set(_children_of(os.getpid())) - others == set(), "a setup helper outlived the start"
    assert all(proc.innermost_pid(p) != p for p in engine.cgroups.pids("101"))


def test_privileged_ve_runs_without_a_user_namespace(engine):
    """The staff-only privileged option maps VE root to host root (identity map)."""
    engine.create(VEConfig(101, "priv1", "busybox", privileged=True))
    pid = engine.start(101)
    assert open(f"/proc/{pid}/uid_map").read().split() == ["0", "0", "4294967295"]
    assert os.stat(engine.layout.private(101)).st_uid == 0


def test_default_ve_root_maps_to_its_own_uid_range(engine):
    make(engine, 101)
    make(engine, 102, hostname="web2")
    maps = {veid: open(f"/proc/{engine.start(veid)}/uid_map").read().split()
            for veid in (101, 102)}
    assert maps == {101: ["0", str(101 * 65536), "65536"],
                    102: ["0", str(102 * 65536), "65536"]}
    assert os.stat(engine.layout.private(101) / "etc" / "passwd").st_uid == 101 * 65536


def test_root_option_overrides_the_environment(engine, tmp_path):
    """`vectl --root DIR` wins over $VE_ROOT."""
    make(engine)
    other = tmp_path / "elsewhere"
    env = dict(os.environ, VE_ROOT=str(other), VE_CGROUP_PARENT=engine.cgroups.parent)
    out = subprocess.run(["vectl", "list", "-a", "--json", "--root", str(engine.layout.root)],
                         env=env, capture_output=True, text=True, timeout=60).stdout
    assert [s["veid"] for s in json.loads(out)] == [101]


def _children_of(parent):
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status") as handle:
                if any(line.split() == ["PPid:", str(parent)] for line in handle):
                    children.append(int(entry))
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
            continue
    return children


def test_a_live_change_that_fails_changes_nothing(engine):
    """Lowering RAM below what the VE holds fails; the other limits stay as they were."""
    make(engine, ram="128M", cpulimit=0)
    engine.start(101)
    # dd holds a 40 MiB buffer while it blocks writing into a pipe nobody reads.
    engine.exec(101, ["sh", "-c", "dd if=/dev/zero bs=40M count=1 | sleep 1000 &"])
    deadline = time.monotonic() + 10
    while engine.status(101).ram_used < 40 << 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(ResourceError):
        engine.set(101, ram="20M", cpulimit=10)
    assert engine.config(101).limits.ram == 128 << 20
    assert engine.config(101).limits.cpulimit == 0
    assert engine.cgroups.usage("101").memory_limit == 128 << 20
    quota = next(Path("/sys/fs/cgroup").glob(f"cpu*/{engine.cgroups.parent}/101/cpu.cfs_quota_us"))
    assert quota.read_text().strip() == "-1"


def test_exec_streams_large_input_and_returns_when_the_command_exits(engine):
    """1 MiB in and out of `cat` does not deadlock; a background child does not hold exec."""
    make(engine)
    engine.start(101)
    data = os.urandom(1 << 20)
    assert engine.exec(101, ["cat"], input=data).stdout == data
    started = time.monotonic()
    result = engine.exec(101, ["sh", "-c", "sleep 1000 & echo started"])
    assert result.returncode == 0 and result.stdout == b"started\n"
    assert time.monotonic() - started < 5


def test_every_start_of_a_ve_has_a_boot_id_of_its_own(engine):
    """journald and `journalctl -b` tell a VE's boots apart: a new boot id at each start,
    never the host's, and read-only inside."""
    make(engine)
    seen = set()
    for _ in range(2):
        engine.start(101)
        out = engine.exec(101, ["cat", "/proc/sys/kernel/random/boot_id"]).stdout.decode()
        seen.add(out.strip())
        assert engine.exec(101, ["sh", "-c", "echo x > /proc/sys/kernel/random/boot_id"]
                           ).returncode != 0
        engine.stop(101, fast=True)
    assert len(seen) == 2 and proc.boot_id() not in seen
    assert all(len(b) == 36 and b[14] == "4" for b in seen)
