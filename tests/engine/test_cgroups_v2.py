"""The cgroup v2 driver: against a fake cgroupfs tree, and for real on this host's cgroup2 mount."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

import ve.cgroups
from ve.cgroups import CgroupV1Driver, CgroupV2Driver, Usage, driver
from ve.cgroups.fs import CgroupFS, cgroup_mounts, poll
from ve.cgroups.v2 import UNLIMITED
from ve.config import Limits
from ve.errors import InvalidConfig, Unsupported

M = 1 << 20
NAME = "101"
OWNER = 101 * 65536  # VE 101's root on the host
LIMITS = Limits(ram=512 * M, swap=128 * M, cpuunits=500, cpulimit=150, cpus=2, numproc=300)

# Interface files the kernel makes in every new group, and per enabled controller.
CORE_FILES = {
    "cgroup.procs": "", "cgroup.threads": "", "cgroup.subtree_control": "", "cgroup.kill": "",
    "cgroup.freeze": "0",
    "cgroup.events": "populated 0\nfrozen 0", "cpu.stat": "usage_usec 0\nuser_usec 0",
}
CONTROLLER_FILES = {
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "io": {"io.weight": "default 100", "io.max": "",
           "io.stat": "7:3 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                      "8:0 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0"},
    "memory": {"memory.max": "max", "memory.swap.max": "max", "memory.current": "0",
               "memory.swap.current": "0",
               "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0",
               "memory.stat": "anon 0\nfile 0\ninactive_file 0\nactive_file 0"},
    "pids": {"pids.max": "max", "pids.current": "0"},
}


def _alive(pid):
    """Tell whether ``pid`` runs (the kernel hides zombies from cgroup.procs too)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class FakeCgroupFS(CgroupFS):
    """A plain directory tree that acts like cgroupfs v2 where the driver can tell.

    mkdir makes the interface files of the controllers the parent enables;
    subtree_control takes "+ctrl" tokens; cgroup.kill SIGKILLs the (real, test
    spawned) PIDs listed; cgroup.procs hides dead PIDs; ``proc`` fakes
    /proc/<pid>/cgroup. Every write is logged in ``writes``.
    """

    def __init__(self, root, controllers="cpu cpuset io memory pids", cgroup_kill=True):
        super().__init__(root)
        self.cgroup_kill = cgroup_kill
        self.proc, self.writes = {}, []
        self._put("cgroup.controllers", controllers)
        for name in ("cgroup.subtree_control", "cgroup.procs"):
            self._put(name, "")
        self._put("cpuset.cpus.effective", "0-3")

    def _put(self, rel, text):
        with open(self.path(rel), "w") as handle:
            handle.write(text)

    def mkdir(self, rel):
        if self.exists(rel):
            return
        super().mkdir(rel)
        up = rel.rsplit("/", 1)[0] if "/" in rel else ""
        enabled = self.read(f"{up}/cgroup.subtree_control").split()
        files = dict(CORE_FILES, **{"cgroup.controllers": " ".join(enabled)})
        for controller in enabled:
            files.update(CONTROLLER_FILES[controller])
        if "cpuset" in enabled:
            files["cpuset.cpus.effective"] = self.read(f"{up}/cpuset.cpus.effective")
        if not self.cgroup_kill:
            del files["cgroup.kill"]
        for name, text in files.items():
            self._put(f"{rel}/{name}", text)

    def read(self, rel):
        text = super().read(rel)
        if rel.endswith("cgroup.procs"):
            return "\n".join(p for p in text.split() if _alive(int(p)))
        return text

    def write(self, rel, value):
        self.writes.append((rel.lstrip("/"), str(value)))
        filename, group = os.path.basename(rel), os.path.dirname(rel)
        if filename == "cgroup.subtree_control":
            value = self._subtree(group, str(value))
        elif filename == "cgroup.kill":
            for pid in self.procs(group):
                os.kill(pid, signal.SIGKILL)
        elif filename == "cgroup.freeze":
            self._put(f"{group}/cgroup.events", f"populated 1\nfrozen {value}")
        super().write(rel, value)

    def _subtree(self, group, tokens):
        enabled = set(self.read(f"{group}/cgroup.subtree_control").split())
        for token in tokens.split():
            if token[1:] not in self.read(f"{group}/cgroup.controllers").split():
                raise OSError(errno.ENOENT, "controller not available", token)
            (enabled.add if token[0] == "+" else enabled.discard)(token[1:])
        return " ".join(sorted(enabled))

    def rmdir(self, rel):
        if self.exists(rel):
            if self.read(f"{rel}/cgroup.procs"):
                raise OSError(errno.EBUSY, "group has processes", rel)
            shutil.rmtree(self.path(rel))

    def proc_cgroup(self, pid):
        if pid not in self.proc:
            raise FileNotFoundError(errno.ENOENT, "no such process", pid)
        return self.proc[pid]


@pytest.fixture
def fake(tmp_path):
    """A fake cgroup2 root offering cpu, cpuset, io, memory and pids."""
    return FakeCgroupFS(tmp_path)


@pytest.fixture
def started():
    """Real processes a test starts, killed and reaped afterwards."""
    processes = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)  # never hang the suite on a process left frozen


def sleeper(started, procs_file=None):
    """Start `sleep 60`, joined to ``procs_file`` before exec when given."""
    def join():
        with open(procs_file, "w") as handle:
            handle.write("0")

    process = subprocess.Popen(["sleep", "60"], preexec_fn=join if procs_file else None)
    started.append(process)
    return process


def add_fake_pid(fake, group, pid):
    """List ``pid`` in a fake group's cgroup.procs (the kernel would on a join)."""
    with open(fake.path(f"{group}/cgroup.procs"), "a") as handle:
        handle.write(f"{pid}\n")


# --- against the fake tree -------------------------------------------------------------


def test_create_delegates_controllers_and_writes_limits(fake):
    """create() enables the controllers at every level and writes every mapped value."""
    drv = CgroupV2Driver(fake, parent="host/ve")
    drv.create(NAME, LIMITS)
    for level in ("", "host", "host/ve"):
        assert fake.read(f"{level}/cgroup.subtree_control") == "cpu cpuset io memory pids"
    group = "host/ve/101"
    assert fake.read(f"{group}/memory.max") == str(512 * M)
    assert fake.read(f"{group}/memory.swap.max") == str(128 * M)
    assert fake.read(f"{group}/cpu.weight") == "50"
    assert fake.read(f"{group}/cpu.max") == "150000 100000"
    assert fake.read(f"{group}/cpuset.cpus") == "0-1"
    assert fake.read(f"{group}/pids.max") == "300"
    assert drv.exists(NAME)


def test_io_caps_and_weight_go_to_io_max_and_io_weight(fake):
    """I/O caps name the VE's disk device; 0 lifts a cap ("max")."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    io = LIMITS.replace(readbps=50 * M, writeiops=1000, ioweight=500)
    drv.apply_io(NAME, io, "7:3")
    assert fake.read("ve/101/io.max") == f"7:3 rbps={50 * M} wbps=max riops=max wiops=1000"
    assert fake.read("ve/101/io.weight") == "default 5000"


def test_lifting_an_io_weight_writes_the_default_back(fake):
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    drv.apply_io(NAME, LIMITS.replace(ioweight=500), "7:3")
    drv.apply_io(NAME, LIMITS, "7:3", reset_weight=True)
    assert fake.read("ve/101/io.weight") == "default 100"
    assert fake.read("ve/101/io.max") == "7:3 rbps=max wbps=max riops=max wiops=max"


def test_io_weight_without_a_weight_file_is_refused(fake):
    """A host whose io controller has no weight (no iocost, no BFQ) says so."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    os.unlink(fake.path("ve/101/io.weight"))
    with pytest.raises(Unsupported, match="io.weight is missing"):
        drv.apply_io(NAME, LIMITS.replace(ioweight=100), "7:3")


def test_create_twice_changes_nothing(fake):
    """A second create() rewrites the limits but enables no controller again."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    fake.writes.clear()
    drv.create(NAME, LIMITS)
    assert not [w for w in fake.writes if w[0].endswith("subtree_control")]
    assert fake.read("ve/101/memory.max") == str(512 * M)


def test_delegate_hands_over_the_group_and_its_process_files_only(fake):
    """VE root gets the directory, cgroup.procs, cgroup.threads and subtree_control;
    every limit and the parent stay host root's."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    drv.delegate(NAME, OWNER)
    group = fake.path("ve/101")
    owned = {f for f in os.listdir(group) if os.stat(os.path.join(group, f)).st_uid == OWNER}
    assert owned == {"cgroup.procs", "cgroup.threads", "cgroup.subtree_control"}
    assert all(os.stat(os.path.join(group, f)).st_gid == OWNER for f in owned)
    assert (os.stat(group).st_uid, os.stat(group).st_gid) == (OWNER, OWNER)
    assert os.stat(fake.path("ve")).st_uid == 0


def test_only_available_controllers_are_enabled(tmp_path):
    """Without cpuset and io on the host, the rest still works."""
    fake = FakeCgroupFS(tmp_path, controllers="cpu memory pids hugetlb")
    CgroupV2Driver(fake, parent="ve").create(NAME, LIMITS)
    assert fake.read("cgroup.subtree_control") == "cpu memory pids"
    assert not fake.exists("ve/101/cpuset.cpus")
    assert fake.read("ve/101/cpu.max") == "150000 100000"


def test_missing_pids_controller_is_unsupported_unless_relaxed(tmp_path):
    """memory and pids are required by default; require_controllers=False skips them."""
    fake = FakeCgroupFS(tmp_path, controllers="cpu memory")
    with pytest.raises(Unsupported, match="pids"):
        CgroupV2Driver(fake, parent="ve").create(NAME, LIMITS)
    assert not fake.exists("ve")
    CgroupV2Driver(fake, parent="ve", require_controllers=False).create(NAME, LIMITS)
    assert fake.read("ve/101/memory.max") == str(512 * M)
    assert not fake.exists("ve/101/pids.max")


def test_missing_swap_file_is_unsupported_when_required(fake):
    """A memory controller without swap accounting cannot enforce the swap limit."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    os.unlink(fake.path("ve/101/memory.swap.max"))
    with pytest.raises(Unsupported, match="memory.swap.max"):
        drv.apply(NAME, LIMITS)


def test_apply_changes_the_files(fake):
    """apply() rewrites the limits of a live group."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    drv.apply(NAME, LIMITS.replace(ram=64 * M, swap=0, cpulimit=0, cpus=0, cpuunits=1000,
                                   numproc=64))
    values = {f: fake.read(f"ve/101/{f}") for f in
              ("memory.max", "memory.swap.max", "cpu.max", "cpuset.cpus", "cpu.weight", "pids.max")}
    assert values == {"memory.max": str(64 * M), "memory.swap.max": "0", "cpu.max": "max 100000",
                      "cpuset.cpus": "0-3", "cpu.weight": "100", "pids.max": "64"}


def test_usage_parses_the_counters(fake):
    """usage() reads cpu.stat, memory.current/max/events/stat, swap, pids and io.stat."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    fake._put("ve/101/cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n")
    fake._put("ve/101/memory.current", "10485760\n")
    fake._put("ve/101/memory.swap.current", "4096\n")
    fake._put("ve/101/pids.current", "7\n")
    fake._put("ve/101/memory.events", "low 0\nhigh 2\nmax 5\noom 1\noom_kill 3\noom_group_kill 0\n")
    fake._put("ve/101/memory.stat", "anon 4194304\nfile 6291456\nactive_file 2097152\n"
                                    "inactive_file 4194304\n")
    assert drv.usage(NAME) == Usage(cpu_ns=1_500_000, memory=10 * M, memory_limit=512 * M,
                                    swap=4096, processes=7, memory_failcnt=5, oom_kills=3,
                                    io_read_bytes=4196, io_write_bytes=8192, io_read_ops=2,
                                    io_write_ops=2, memory_reclaimable=4 * M)
    fake._put("ve/101/memory.max", "max\n")
    os.unlink(fake.path("ve/101/memory.swap.current"))  # no swap accounting: 0
    usage = drv.usage(NAME)
    assert usage.memory_limit == UNLIMITED and usage.swap == 0


def test_usage_of_a_missing_group_is_an_oserror(fake):
    """Counters of a group that does not exist are an error, not zeros."""
    with pytest.raises(OSError):
        CgroupV2Driver(fake, parent="ve").usage("999")


@pytest.mark.parametrize("text, name", [
    ("0::/host/ve/101\n", "101"),
    ("0::/host/ve/101/init.scope\n", "101"),
    ("12:pids:/elsewhere\n1:name=systemd:/x\n0::/host/ve/202\n", "202"),  # hybrid: the 0:: line
    ("0::/user.slice/session-1.scope\n", None),
    ("0::/host/ve\n", None),
])
def test_group_of_parses_the_unified_line(fake, text, name):
    """group_of() names the VE from the 0:: line of /proc/<pid>/cgroup."""
    fake.proc[4242] = text
    assert CgroupV2Driver(fake, parent="host/ve").group_of(4242) == name


def test_group_of_a_vanished_pid_is_none(fake):
    """A PID whose /proc entry is gone belongs to no VE."""
    assert CgroupV2Driver(fake, parent="ve").group_of(4243) is None


@pytest.mark.parametrize("text, leaf", [
    ("0::/host/ve/101\n", ""),
    ("0::/host/ve/101/init.scope\n", "init.scope"),  # a VE's systemd moved its init there
    ("0::/host/ve/101/system.slice/cron.service\n", "system.slice/cron.service"),
    ("0::/host/ve/1011/init.scope\n", ""),  # another VE's: never
    ("0::/elsewhere\n", ""),
])
def test_commands_join_the_leaf_their_ves_init_is_in(fake, text, leaf):
    """exec joins init's own cgroup2 group: the VE's top group may take no processes."""
    fake.proc[4242] = text
    driver = CgroupV2Driver(fake, parent="host/ve")
    assert driver.leaf_of("101", 4242) == leaf
    expected = "/".join(filter(None, ("host/ve/101", leaf, "cgroup.procs")))
    assert driver.join_files("101", leaf=leaf) == [fake.path(expected)]


def test_procs_files_is_the_one_procs_file(fake):
    """v2 has one hierarchy, so one absolute cgroup.procs path."""
    drv = CgroupV2Driver(fake, parent="ve")
    assert drv.procs_files(NAME) == [os.path.join(fake.root, "ve/101/cgroup.procs")]


def test_kill_writes_cgroup_kill(fake, started):
    """With cgroup.kill, one write kills the group, subgroups included."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    fake.mkdir("ve/101/inner")
    processes = [sleeper(started), sleeper(started)]
    add_fake_pid(fake, "ve/101", processes[0].pid)
    add_fake_pid(fake, "ve/101/inner", processes[1].pid)
    assert drv.pids(NAME) == sorted(p.pid for p in processes)
    drv.kill(NAME)
    assert ("ve/101/cgroup.kill", "1") in fake.writes
    assert [p.wait() for p in processes] == [-signal.SIGKILL] * 2
    assert drv.pids(NAME) == []


def test_kill_without_cgroup_kill_freezes_kills_and_thaws(tmp_path, started):
    """Before 5.14 (no cgroup.kill) the group is frozen, each PID killed, then thawed."""
    fake = FakeCgroupFS(tmp_path, cgroup_kill=False)
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    process = sleeper(started)
    add_fake_pid(fake, "ve/101", process.pid)
    drv.kill(NAME)
    assert process.wait() == -signal.SIGKILL
    freezes = [value for rel, value in fake.writes if rel == "ve/101/cgroup.freeze"]
    assert freezes == ["1", "0"]


def test_destroy_removes_the_tree_and_tolerates_a_missing_group(fake):
    """destroy() removes the group with its subgroups, keeps the parent, and is idempotent."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    fake.mkdir("ve/101/inner")
    drv.destroy(NAME)
    assert not drv.exists(NAME) and fake.exists("ve")
    drv.destroy(NAME)


def test_destroy_times_out_while_a_process_remains(fake, started):
    """destroy() does not kill: a live process makes it fail with EBUSY."""
    drv = CgroupV2Driver(fake, parent="ve")
    drv.create(NAME, LIMITS)
    add_fake_pid(fake, "ve/101", sleeper(started).pid)
    with pytest.raises(OSError) as caught:
        drv.destroy(NAME, timeout=0.05)
    assert caught.value.errno == errno.EBUSY and drv.exists(NAME)


# --- detection and the factory ----------------------------------------------------------


def test_detect_prefers_the_environment(monkeypatch, tmp_path):
    """VE_CGROUP forces the version; a bad value is an InvalidConfig."""
    monkeypatch.setenv("VE_CGROUP", "v2")
    assert ve.cgroups.detect(root=str(tmp_path), mountinfo="") == 2
    monkeypatch.setenv("VE_CGROUP", "v3")
    with pytest.raises(InvalidConfig):
        ve.cgroups.detect()


def test_detect_pure_v2_then_v1_then_nothing(monkeypatch, tmp_path):
    """A cgroup2 root wins over a v1 memory mount; with neither, Unsupported."""
    monkeypatch.delenv("VE_CGROUP", raising=False)
    v1_line = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert ve.cgroups.detect(root=str(tmp_path), mountinfo=v1_line) == 1
    with pytest.raises(Unsupported):
        ve.cgroups.detect(root=str(tmp_path), mountinfo="")
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    assert ve.cgroups.detect(root=str(tmp_path), mountinfo=v1_line) == 2


def test_driver_builds_each_flavour(tmp_path):
    """driver() picks the class; a v1 fake root names hierarchies by directory."""
    v2 = driver(parent="x/ve", version="v2", root=str(tmp_path))
    assert isinstance(v2, CgroupV2Driver) and v2.fs.root == str(tmp_path) and v2.parent == "x/ve"
    for name in ("memory", "cpu,cpuacct", "pids"):
        (tmp_path / name).mkdir()
    v1 = driver(version=1, root=str(tmp_path), require_controllers=False)
    assert isinstance(v1, CgroupV1Driver) and v1.version == 1
    assert v1.mounts == {"memory": "memory", "cpu": "cpu,cpuacct", "cpuacct": "cpu,cpuacct",
                         "pids": "pids"}


# --- for real, on this host's cgroup2 mount --------------------------------------------


def _purge(top):
    """Remove a real cgroup2 test subtree bottom-up, killing whatever is inside."""
    for dirpath, _, _ in os.walk(top):  # top-down: thaw parents before children
        _write_if_present(os.path.join(dirpath, "cgroup.freeze"), "0")  # kernel 5.2+
    stuck = [path for path, _, _ in os.walk(top, topdown=False)
             if not poll(lambda: _kill_and_rmdir(path), 5.0)]
    assert not stuck, f"cannot remove {stuck}"


def _write_if_present(path, value):
    if os.path.exists(path):
        with open(path, "w") as handle:
            handle.write(value)


def _kill_and_rmdir(path):
    """Kill the group's processes (cgroup.kill, 5.14+) and try to remove it."""
    _write_if_present(os.path.join(path, "cgroup.kill"), "1")
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        return False
    return True


@pytest.fixture
def mount():
    """Return this host's cgroup2 mount point (/sys/fs/cgroup/unified here)."""
    mounts = cgroup_mounts()["v2"]
    if not mounts:
        pytest.skip("no cgroup2 filesystem is mounted on this host")
    return mounts[0]


@pytest.fixture
def top(mount, started):
    """A unique test subtree on the real cgroup2 mount, removed even on failure.

    It depends on ``started`` so that its purge runs before processes are reaped.
    """
    name = f"vetest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    _purge(os.path.join(mount, name))


def host_controllers(mount):
    """Return the controllers the real cgroup2 root offers."""
    with open(os.path.join(mount, "cgroup.controllers")) as handle:
        return set(handle.read().split())


class NoKillFS(CgroupFS):
    """The real cgroup2 tree with cgroup.kill hidden, as on kernels before 5.14."""

    def exists(self, rel):
        return not rel.endswith("cgroup.kill") and super().exists(rel)


def test_real_create_refuses_without_memory_and_pids(mount, top):
    """By default the driver needs memory and pids; it makes nothing without them."""
    drv = CgroupV2Driver(CgroupFS(mount), parent=f"{top}/ve")
    if {"memory", "pids"} <= host_controllers(mount):
        drv.create(NAME, LIMITS)
        assert drv.exists(NAME)
    else:
        with pytest.raises(Unsupported):
            drv.create(NAME, LIMITS)
        assert not os.path.exists(os.path.join(mount, top))


def test_real_hierarchy_operations(mount, top, started):
    """Join, list, locate, measure, kill and remove a group on the real cgroup2 mount."""
    drv = CgroupV2Driver(CgroupFS(mount), parent=f"{top}/ve", require_controllers=False)
    drv.create(NAME, LIMITS)
    drv.create(NAME, LIMITS)
    (procs_file,) = drv.procs_files(NAME)
    process = sleeper(started, procs_file)
    assert drv.pids(NAME) == [process.pid]
    assert drv.group_of(process.pid) == NAME
    assert drv.group_of(os.getpid()) is None
    # cpu.stat is kept even without the cpu controller; the sleeper's exec
    # may not have been charged yet when we first look.
    assert poll(lambda: drv.usage(NAME).cpu_ns > 0, 5.0)
    usage = drv.usage(NAME)
    if "pids" in host_controllers(mount):
        assert usage.processes == 1
    drv.kill(NAME)
    assert process.wait() == -signal.SIGKILL
    assert drv.group_of(process.pid) is None
    drv.destroy(NAME)
    assert not os.path.exists(os.path.join(mount, top, "ve", NAME))
    drv.destroy(NAME)


@pytest.mark.parametrize("fs_class", [CgroupFS, NoKillFS], ids=["cgroup.kill", "freeze"])
def test_real_kill_ends_a_forking_tree(mount, top, started, fs_class):
    """kill() empties a group whose processes keep forking, with either method."""
    drv = CgroupV2Driver(fs_class(mount), parent=f"{top}/ve", require_controllers=False)
    drv.create(NAME, LIMITS)
    code = textwrap.dedent("""
        import os
        for _ in range(3):
            if os.fork() == 0:
                os.fork()
                break
        while True:
            if os.fork() == 0:
                os._exit(0)
            os.wait()
    """)
    (procs_file,) = drv.procs_files(NAME)
    tree = subprocess.Popen([sys.executable, "-c", code],
                            preexec_fn=lambda: open(procs_file, "w").write("0"))
    started.append(tree)
    assert poll(lambda: len(drv.pids(NAME)) >= 7, 5.0)
    drv.kill(NAME)
    assert drv.pids(NAME) == []
    assert tree.wait() == -signal.SIGKILL
    drv.destroy(NAME)


@pytest.mark.allowed_skip("needs cgroup2 with the memory, pids and cpu controllers")
def test_real_v2_limits_on_a_host_with_v2_controllers(mount, top, started):
    """On a pure v2 host the limits land in the real files and usage() reads them."""
    missing = {"memory", "pids", "cpu"} - host_controllers(mount)
    if missing:
        pytest.skip(f"cgroup2 at {mount} lacks {', '.join(sorted(missing))} (hybrid host: "
                    "those limits are tested by test_cgroups_v1.py here)")
    drv = CgroupV2Driver(CgroupFS(mount), parent=f"{top}/ve")
    drv.create(NAME, LIMITS)
    group = os.path.join(mount, top, "ve", NAME)

    def value(filename):
        with open(os.path.join(group, filename)) as handle:
            return handle.read().strip()

    assert value("memory.max") == str(512 * M)
    assert value("cpu.max") == "150000 100000"
    assert value("cpu.weight") == "50"
    assert value("pids.max") == "300"
    drv.apply(NAME, LIMITS.replace(ram=128 * M, numproc=32))
    assert value("memory.max") == str(128 * M) and value("pids.max") == "32"
    sleeper(started, drv.procs_files(NAME)[0])
    usage = drv.usage(NAME)
    assert usage.processes == 1 and usage.memory > 0 and usage.memory_limit == 128 * M
    drv.kill(NAME)
    drv.destroy(NAME)
    assert not os.path.exists(group)


def test_real_delegated_group_is_managed_by_its_owner_alone(mount, top, started):
    """The owner of a delegated group makes subgroups in it and moves its processes
    between them; it cannot change the group's own files or touch its parent."""
    drv = CgroupV2Driver(CgroupFS(mount), parent=f"{top}/ve", require_controllers=False)
    drv.create(NAME, LIMITS)
    drv.delegate(NAME, OWNER)
    group = drv.clone_target(NAME)
    code = textwrap.dedent("""
        import os, sys
        group = sys.argv[1]
        def attempt(what, path, value=None):
            try:
                if value is None:
                    os.mkdir(path)
                else:
                    with open(path, "w") as handle:
                        handle.write(value)
                print(what, "ok")
            except OSError as exc:
                print(what, exc.errno)
        attempt("subgroup", f"{group}/leaf")
        attempt("move", f"{group}/leaf/cgroup.procs", "0")
        attempt("limit", f"{group}/cgroup.max.descendants", "1")
        attempt("sibling", f"{group}/../other")
        attempt("parent", f"{group}/../cgroup.procs", "0")
    """)
    (procs_file,) = drv.procs_files(NAME)

    def join_and_drop():
        with open(procs_file, "w") as handle:
            handle.write("0")
        os.setgroups([])
        os.setgid(OWNER)
        os.setuid(OWNER)

    process = subprocess.Popen([os.path.realpath(sys.executable), "-c", code, group],
                               preexec_fn=join_and_drop, stdout=subprocess.PIPE, text=True)
    started.append(process)
    out, _ = process.communicate(timeout=30)
    assert dict(line.split() for line in out.splitlines()) == {
        "subgroup": "ok", "move": "ok", "limit": str(errno.EACCES),
        "sibling": str(errno.EACCES), "parent": str(errno.EACCES)}
    drv.kill(NAME)
    drv.destroy(NAME)
    assert not os.path.exists(group)


def test_group_names_cannot_climb_out_of_the_tree(fake):
    """A name with ".." never reaches the file system."""
    with pytest.raises(ValueError):
        CgroupV2Driver(fake, parent="ve").create("../../etc", LIMITS)
