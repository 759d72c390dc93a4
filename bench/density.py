#!/usr/bin/env python3
"""Host memory per idle systemd Debian VE running sshd: ours today, ours with a shared
template, and LXC on the same rootfs, side by side in one run (issue 17, part 3).

For each variant in turn, with N containers (``--count``, default 100):

  1. make N containers of the ``debian-12`` template (not measured); ours: start
     the node watcher (which starts the node's lxcfs), as a node runs it
  2. sync, drop the caches (echo 3 > /proc/sys/vm/drop_caches), let the host
     settle, read /proc/meminfo (median of three readings)
  3. start the N, at most ``--parallel`` of them booting at once, until each
     runs sshd (an ``sshd`` process in the container's cgroup); ``--settle``
     seconds after the last start, read /proc/meminfo again
  4. read each container's v1 memory cgroup and the PSS of its processes
  5. stop and destroy everything of the variant and check that nothing is
     left (processes, cgroups, mounts, loop devices, LXC containers, files)

  today   the engine's default Debian VE through its Python API from this warm
          process (Engine.create/start): the default layout (a disk image on a
          loop device), a plan's limits (512 MiB RAM, no swap, 2 GiB disk), the
          node watcher's console (so an agetty runs in it) and lxcfs views
  shared  the same with VEConfig(shared_template=True): identical template files
          share their page cache across VEs. "unavailable" while VEConfig has
          no such field
  lxc     `lxc-start -d` of Debian's LXC 5, unprivileged (65536 ids mapped, like
          a VE), each container on its own unpacked copy of the same template
          (what LXC's dir backend has), the same RAM limit, the same systemd
          and sshd (hybrid cgroup view: lxc.mount.auto = cgroup:mixed)

Per container, in MiB: the MemFree drop (host memory given to the containers,
page cache included: that is what sharing template files saves), the
MemAvailable drop, the growth of Cached (page cache, tmpfs included) and
AnonPages, the memory cgroups' usage_in_bytes and total_cache / total_rss from
memory.stat, and the PSS of the containers' processes split into anon, file
and shmem (/proc/PID/smaps_rollup), plus what host-side helpers hold (ours: the
node watcher, its twin and lxcfs, one each per node, running before the first
reading; LXC: a monitor per container). None of the containers has a network
device but loopback.

Other activity on the host moves the /proc/meminfo figures (people's tests
here move MemFree by hundreds of MiB within seconds): the MemFree drop is also
given less what every other memory cgroup grew between the two readings (not
this process's, where our watcher and lxcfs run, nor the containers'). That
stays rough: memory still charged to groups removed meanwhile (tests remove
theirs) is invisible to it, and it moved by 10 MiB per container between runs
on a busy machine. The containers' own cgroup and PSS figures do not depend on
the rest of the host. The machine's facts, each
container's boot time, the systemd state of the first container and the
engine files that differ from the commit go into bench/results/density.json.

Debian's default of 128 inotify instances per user lets only ~16 systemd
containers boot (every container's count is charged to root, who made its user
namespace): the engine's start raises fs.inotify.max_user_instances for good
(ve/kernel/ucounts.py); for LXC alone the run raises it when it is lower than N
containers need and puts it back at the end.

The template is built once with debootstrap (about a minute) and kept in
/var/tmp/density-bench/template-cache; everything else lives in
/var/tmp/density-bench/run-<pid>-* and the cgroups density-bench-<pid>, and
goes at the end, also on an error or Ctrl-C (a later run removes what a
killed one left).

    .venv/bin/python bench/density.py [--count 100] [--variants today,shared,lxc]
"""

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS_DIR, all_pids, cleanup_remains, cmdline,  # noqa: E402
                    hierarchy_of, import_engine, interrupts_as_exceptions, kill_cgroup_tree,
                    log, machine, meminfo, proc_cgroup, pss, remove_cgroup_tree,
                    require_root, uninterrupted, unmount_and_detach, wait_gone,
                    write_json)
from peers import DROPPED_CAPS, IDMAP_SIZE  # noqa: E402

BASE = Path("/var/tmp/density-bench")
TEMPLATE_CACHE = BASE / "template-cache"
CGROUP_PREFIX = "density-bench-"
FIRST_VEID = 7000  # VEIDs 7000-7099 for our VEs (today, then shared)
FIRST_LXC = 7100   # LXC containers dn7100-dn7199 (uid ranges 7100 * 65536 ...)
MAX_COUNT = 100    # the two ranges above
VARIANTS = ("today", "shared", "lxc")
RAM = 512 << 20
DISK = 2 << 30
NUMPROC = 1024  # a systemd Debian with sshd runs ~10 processes; the plan's cap is not tested
MEMINFO_FIELDS = ("MemFree", "MemAvailable", "Cached", "Buffers", "AnonPages", "Shmem",
                  "Mapped", "Slab", "SReclaimable", "SUnreclaim", "KernelStack", "PageTables",
                  "Percpu")
MEMSTAT_FIELDS = ("total_cache", "total_rss", "total_shmem", "total_mapped_file",
                  "total_active_file", "total_inactive_file")
SPACE_RESERVE = 5 << 30  # left free on /var/tmp for everyone else
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")
# A booted Debian 12 container holds ~8 inotify instances (systemd, journald, logind,
# dbus...); twice that for room, and the machine's own use on top.
INOTIFY_PER_CONTAINER = 16
INOTIFY_BASE = 1024


# -- variants -------------------------------------------------------------------

class Variant:
    """One way of running N Debian containers: make, start, find, destroy them."""

    name = "?"
    label = "?"

    def __init__(self, run):
        self.run = run
        self.made = []

    def unavailable(self):
        """Why this variant cannot run here (None: it can)."""
        return None

    def prepare(self, ident):
        raise NotImplementedError

    def start(self, ident):
        raise NotImplementedError

    def start_node_services(self):
        """Start what serves every container of a node (before the first reading)."""

    def stop_node_services(self):
        """Stop it again; return the errors (a list)."""
        return []

    def group(self, ident):
        """Container ``ident``'s cgroup, relative to each v1 hierarchy's mount."""
        raise NotImplementedError

    def cgroups(self):
        """The groups the variant's containers (and helpers) live in, relative."""
        raise NotImplementedError

    def boot_state(self, ident):
        """`systemctl is-system-running` and the failed units inside ``ident``."""
        raise NotImplementedError

    def destroy_all(self):
        """Stop and remove every container made; return the errors (a list)."""
        raise NotImplementedError


class Ours(Variant):
    """The engine's default Debian VE, through Engine in this process."""

    name, label = "today", "ours, default Debian VE (disk image)"

    def __init__(self, run):
        super().__init__(run)
        self.dir = run.path(self.name)
        self.cgroup_parent = f"{run.cgroup_prefix}/{self.name}"
        # Not under VE_ROOT (0700): VE root must be able to reach it.
        self.lxcfs_dir = run.path(f"{self.name}-lxcfs")
        self.engine = None

    def config_extra(self):
        return {}

    def _engine(self):
        if self.engine is None:
            self.engine = self.run.Engine(root=str(self.dir), cgroup_parent=self.cgroup_parent)
            self.engine.layout.ensure()
            for item in TEMPLATE_CACHE.iterdir():
                shutil.copy2(item, self.engine.layout.cache_dir / item.name)
        return self.engine

    def prepare(self, ident):
        limits = self.run.Limits(ram=RAM, swap=0, numproc=NUMPROC, diskspace=DISK)
        cfg = self.run.VEConfig(ident, f"density{ident}", self.run.template, limits,
                                **self.config_extra())
        self._engine().create(cfg)
        self.made.append(ident)

    def start(self, ident):
        self.engine.start(ident)

    def start_node_services(self):
        """The node watcher (and its twin), which starts the node's lxcfs: what the
        engine would start at the first start, started before the first reading as
        on a node that runs it as a service. Its lxcfs serves a directory of this
        run, not the machine's /var/lib/lxcfs, which other people's VEs may use."""
        from ve import watch
        from ve.kernel import lxcfs_mounts
        self.lxcfs_dir.mkdir(exist_ok=True)
        os.environ["VE_LXCFS"] = str(self.lxcfs_dir)  # the engine's and the watcher's
        if not watch.available(self.engine.layout, self.cgroup_parent):
            raise RuntimeError("the node watcher did not start")
        deadline = time.monotonic() + 10
        while not lxcfs_mounts.serving(str(self.lxcfs_dir)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no lxcfs serves {self.lxcfs_dir} (see {self.dir})")
            time.sleep(0.1)

    def stop_node_services(self):
        """SIGTERM the watcher and its twin (they would exit a minute after the last VE,
        into the next variant's readings), then stop lxcfs."""
        from ve.watch.lxcfs import LxcfsSupervisor
        errors = []
        watchers = [pid for pid in all_pids() if environ(pid).get("VE_ROOT") == str(self.dir)]
        for pid in watchers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in watchers:
            if not wait_gone(pid, 5):
                os.kill(pid, signal.SIGKILL)
                errors += [] if wait_gone(pid, 5) else [f"watcher {pid} survives SIGKILL"]
        try:
            LxcfsSupervisor(self.dir, str(self.lxcfs_dir)).stop()
        except OSError as exc:
            errors.append(f"stopping lxcfs: {exc}")
        os.environ.pop("VE_LXCFS", None)
        with contextlib.suppress(FileNotFoundError):
            self.lxcfs_dir.rmdir()
        return errors

    def group(self, ident):
        return f"{self.cgroup_parent}/{ident}"

    def cgroups(self):
        return [self.cgroup_parent]

    def boot_state(self, ident):
        out = self.engine.exec(ident, ["sh", "-c", BOOT_STATE], timeout=60)
        return out.stdout.decode(errors="replace").strip()

    def destroy_all(self):
        errors = []
        for ident in list(self.made):
            try:
                self.engine.destroy(ident, timeout=5)
                self.made.remove(ident)
            except Exception as exc:  # keep destroying the others
                errors.append(f"destroy VE {ident}: {exc}")
        return errors

    def leftovers(self):
        """Loop devices and mounts of this variant's images (its files go with the dir)."""
        return unmount_and_detach(self.dir)


class OursShared(Ours):
    """The same VE with ``shared_template=True`` (issue 17 part 3: identical template
    files share their page cache across VEs)."""

    name, label = "shared", "ours, Debian VE, shared_template=True"

    def unavailable(self):
        if "shared_template" not in self.run.VEConfig._fields:
            return "VEConfig has no shared_template field yet (the sharing has not landed)"
        return None

    def config_extra(self):
        return {"shared_template": True}


# Waits for the boot to end (as tests/engine/test_debian.py does), then lists failures.
BOOT_STATE = """
for i in $(seq 300); do
    s=$(systemctl is-system-running 2>/dev/null)
    case $s in running|degraded|maintenance|stopping) break;; esac
    sleep 0.2
done
echo "$s $(systemctl list-units --failed --plain --no-legend | cut -d' ' -f1 | tr '\\n' ' ')"
"""


class Lxc(Variant):
    """Debian's LXC 5, unprivileged, systemd as init, a rootfs copy per container.

    As in bench/peers.py: PATH without /usr/bin hides newuidmap, so that LXC,
    as root, writes the id maps itself (as the engine does) instead of
    insisting on /etc/subuid ranges; the same capabilities are dropped. What
    differs for systemd: /proc, /sys and the cgroup hierarchies are mounted
    as LXC's common.conf for distribution containers mounts them (mixed: the
    container's own groups writable, so that systemd runs its units in them;
    on this host systemd then sees a hybrid v1 + v2 tree, where ours sees only
    its delegated cgroup2 group), and systemd mounts /dev/shm, /run and the
    rest itself.
    """

    name, label = "lxc", "LXC 5 (lxc-start -d), rootfs copy each"

    def __init__(self, run):
        super().__init__(run)
        self.path = run.path(self.name)
        self.path.mkdir()
        os.chmod(self.path, 0o711)  # mapped roots traverse down to their rootfs
        self.env = {"PATH": "/usr/sbin:/sbin", "LANG": "C"}
        self.errlog = open(run.path(f"{self.name}.err"), "a")
        self.started = []

    def container(self, ident):
        return f"dn{ident}"

    def prepare(self, ident):
        directory = self.path / self.container(ident)
        directory.mkdir()
        os.chmod(directory, 0o711)
        rootfs = directory / "rootfs"
        self.run.unpack(self.run.tarball, rootfs, ident * IDMAP_SIZE)
        self.made.append(ident)
        base = ident * IDMAP_SIZE
        prefix = self.run.cgroup_prefix
        (directory / "config").write_text(f"""\
lxc.uts.name = density{ident}
lxc.rootfs.path = dir:{rootfs}
lxc.idmap = u 0 {base} {IDMAP_SIZE}
lxc.idmap = g 0 {base} {IDMAP_SIZE}
lxc.net.0.type = empty
lxc.init.cmd = /sbin/init
lxc.signal.halt = SIGRTMIN+4
lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed
lxc.autodev = 1
lxc.pty.max = 16
lxc.tty.max = 0
lxc.console.path = none
lxc.apparmor.profile = unconfined
lxc.cap.drop = {' '.join(DROPPED_CAPS)}
lxc.cgroup.dir.container = {prefix}/lxc/{self.container(ident)}
lxc.cgroup.dir.monitor = {prefix}/lxcmon/{self.container(ident)}
lxc.cgroup.dir.monitor.pivot = {prefix}/lxcpivot
lxc.cgroup.memory.limit_in_bytes = {RAM}
lxc.cgroup.memory.memsw.limit_in_bytes = {RAM}
lxc.cgroup.pids.max = {NUMPROC}
lxc.cgroup.cpu.shares = 1024
""")

    def _lxc(self, tool, ident, *args, check=True, capture=False):
        out = subprocess.run([f"/usr/bin/{tool}", "-n", self.container(ident),
                              "-P", str(self.path), *args], env=self.env,
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                             stderr=subprocess.PIPE if capture else self.errlog,
                             text=True, timeout=120)
        if check and out.returncode:
            raise RuntimeError(f"{tool} {self.container(ident)} exited {out.returncode}"
                               f" (see {self.errlog.name})")
        return out

    def start(self, ident):
        self.started.append(ident)
        self._lxc("lxc-start", ident, "-d", "-o", str(self.run.path("lxc.log")), "-l", "WARN")

    def group(self, ident):
        return f"{self.run.cgroup_prefix}/lxc/{self.container(ident)}"

    def cgroups(self):
        return [f"{self.run.cgroup_prefix}/{g}" for g in ("lxc", "lxcmon", "lxcpivot")]

    def boot_state(self, ident):
        out = self._lxc("lxc-attach", ident, "--clear-env", "--", "/bin/sh", "-c", BOOT_STATE,
                        check=False, capture=True)
        return (out.stdout + out.stderr).strip()

    def destroy_all(self):
        errors = []
        for ident in list(self.started):
            out = self._lxc("lxc-stop", ident, "-k", check=False, capture=True)
            if out.returncode and "not running" not in out.stderr:
                errors.append(f"lxc-stop {self.container(ident)}: {out.stderr.strip()}")
            self.started.remove(ident)
        running = self.running()
        if running:
            errors.append(f"LXC containers still running: {running[:5]}")
        shutil.rmtree(self.path, ignore_errors=True)  # its containers: configs and rootfs
        self.made.clear()
        return errors

    def running(self):
        out = subprocess.run(["/usr/bin/lxc-ls", "-P", str(self.path), "--running", "-1"],
                             env=self.env, capture_output=True, text=True)
        return out.stdout.split()

    def leftovers(self):
        return []

    def close(self):
        self.errlog.close()


# -- one run ----------------------------------------------------------------------

class Run:
    """This run's directory, cgroup prefix, engine classes and template."""

    def __init__(self, template):
        BASE.mkdir(exist_ok=True)
        os.chmod(BASE, 0o711)
        self.cgroup_prefix = f"{CGROUP_PREFIX}{os.getpid()}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=BASE))
        os.chmod(self.dir, 0o711)
        self.Engine, self.VEConfig, self.Limits, self.unpack = import_engine()
        self.template = template
        self.tarball = None

    def path(self, *parts):
        return self.dir.joinpath(*parts)

    def cleanup(self):
        """Whatever the variants left: mounts, loop devices, processes, cgroups, files."""
        return clean_workdir(self.cgroup_prefix, self.dir)


def clean_workdir(cgroup_prefix, workdir):
    """Kill the processes serving ``workdir``'s nodes (watchers know theirs by VE_ROOT
    only, lxcfs by its pid file), then unmount, detach, and remove the rest."""
    ours = [pid for pid in all_pids() if pid != os.getpid() and (
        environ(pid).get("VE_ROOT", "").startswith(str(workdir)) or str(workdir) in cmdline(pid))]
    for pid in ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    problems = [f"process {pid} survives SIGKILL" for pid in ours if not wait_gone(pid, 5)]
    return problems + unmount_and_detach(workdir) + cleanup_remains(cgroup_prefix, workdir)


def remove_stale():
    """Remove what killed runs of this benchmark left (their PID no longer runs it)."""
    stale = set()
    for name in os.listdir(BASE) if BASE.is_dir() else ():
        if name.startswith("run-"):
            stale.add(int(name.split("-")[1]))
    for mount in {hierarchy_of(c) for c in ("pids", "memory")} - {None}:
        for name in os.listdir(mount):
            if name.startswith(CGROUP_PREFIX) and name[len(CGROUP_PREFIX):].isdigit():
                stale.add(int(name[len(CGROUP_PREFIX):]))
    for pid in sorted(stale):
        if pid == os.getpid() or "density.py" in cmdline(pid):
            continue
        log(f"removing what an earlier run (pid {pid}) left")
        workdirs = [BASE / n for n in os.listdir(BASE) if n.startswith(f"run-{pid}-")]
        for workdir in workdirs or [Path("/nonexistent")]:
            for problem in clean_workdir(f"{CGROUP_PREFIX}{pid}", workdir):
                log(f"stale cleanup: {problem}")


def ensure_template(name, rebuild=False):
    """The template's tarball in TEMPLATE_CACHE, built with debootstrap if missing."""
    from ve.storage import recipes, templates
    from ve.errors import NotFound
    if not rebuild:
        with contextlib.suppress(NotFound):
            return templates.cache_path(TEMPLATE_CACHE, name)
    log(f"building template {name} with debootstrap (about a minute)")
    recipes.build(TEMPLATE_CACHE, name)
    return templates.cache_path(TEMPLATE_CACHE, name)


@contextlib.contextmanager
def inotify_room(count, facts):
    """Raise the host's inotify instance limit for the run if ``count`` containers
    need more; put it back afterwards. Notes both values in ``facts``.

    Every container's instances count against those of the user that made its
    user namespace, up the chain: all VEs and all LXC containers share root's
    (Debian's default 128). 16 systemd Debian VEs use them up; the 17th's
    systemd cannot start, and nor can anything of root's elsewhere on the
    machine, other people's tests included. Both runtimes need the same room.
    Our engine's first start raises it for good (ve/kernel/ucounts.py), which this
    then leaves alone; an LXC-only run gets it for the run.
    """
    old = int(INOTIFY_LIMIT.read_text())
    wanted = INOTIFY_BASE + INOTIFY_PER_CONTAINER * count
    facts.update(inotify_max_user_instances_host=old,
                 inotify_max_user_instances_run=max(old, wanted))
    if old >= wanted:
        yield
        return
    log(f"raising fs.inotify.max_user_instances from {old} to {wanted} for the run")
    INOTIFY_LIMIT.write_text(f"{wanted}\n")
    try:
        yield
    finally:
        if int(INOTIFY_LIMIT.read_text()) == wanted:  # unless someone changed it meanwhile
            INOTIFY_LIMIT.write_text(f"{old}\n")
            log(f"fs.inotify.max_user_instances back to {old}")


def check_space(tarball, count):
    """Exit unless /var/tmp has room for ``count`` unpacked copies (one variant at a
    time: each is destroyed before the next) plus SPACE_RESERVE; return the figures."""
    import tarfile
    with tarfile.open(tarball) as tar:
        unpacked = sum(m.size for m in tar)
    # Blocks of 4 KiB per file and the filesystems' own metadata: ~25% on top.
    needed = int(unpacked * 1.25) * count
    free = shutil.disk_usage(BASE).free
    facts = {"template_unpacked_mib": unpacked >> 20, "needed_gib": round(needed / 2**30, 1),
             "free_gib": round(free / 2**30, 1)}
    log(f"disk: {facts['needed_gib']} GiB needed for {count} copies, "
        f"{facts['free_gib']} GiB free on {BASE}")
    if needed + SPACE_RESERVE > free:
        sys.exit(f"not enough disk space on {BASE}: {facts}")
    return facts


# -- measuring ----------------------------------------------------------------------

def drop_caches():
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def meminfo_sample(exclude, samples=3, gap=1.0):
    """Median of ``samples`` readings of MEMINFO_FIELDS and of ``Others`` (others_usage), kB."""
    readings = []
    for i in range(samples):
        if i:
            time.sleep(gap)
        readings.append({**meminfo(), "Others": others_usage(exclude) // 1024})
    return {f: statistics.median(r.get(f, 0) for r in readings)
            for f in MEMINFO_FIELDS + ("Others",)}


def others_usage(exclude):
    """Bytes charged to the memory cgroups of everything else on the host: people's
    tests run here meanwhile, and their memory moves MemFree by hundreds of MiB.
    ``exclude``: cgroup paths (``/a/b``) left out, with what is below them."""
    top = Path(hierarchy_of("memory"))
    total = 0
    stack = [top]
    while stack:
        for child in (d for d in stack.pop().iterdir() if d.is_dir()):
            path = "/" + str(child.relative_to(top))
            if path in exclude:
                continue
            if any(e.startswith(path + "/") for e in exclude):
                stack.append(child)  # ours is below: count its siblings one by one
                continue
            with contextlib.suppress(OSError, ValueError):
                total += int((child / "memory.usage_in_bytes").read_text())
    return total


def group_pids(relative):
    """PIDs in ``relative`` and its subgroups, pids hierarchy (systemd makes subgroups)."""
    found = set()
    top = Path(hierarchy_of("pids"), relative)
    for directory, _, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in Path(directory, "cgroup.procs").read_text().split())
    return found


def comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def has_sshd(variant, ident):
    return any(comm(pid) == "sshd" for pid in group_pids(variant.group(ident)))


def start_all(variant, ids, parallel, timeout):
    """Start every container of ``ids``, at most ``parallel`` booting at once; wait for
    each one's sshd. Return ({ident: seconds to sshd}, {ident: error}, last start time)."""
    booting, ready, failed = {}, {}, {}
    last_start = time.monotonic()
    for number, ident in enumerate(ids, 1):
        while len(booting) >= parallel:
            _poll_boots(variant, booting, ready, failed, timeout)
        if len(failed) > max(3, len(ids) // 10):
            log(f"{variant.name}: {len(failed)} containers failed, starting no more: "
                f"{dict(list(failed.items())[:3])}")
            break
        try:
            variant.start(ident)
            booting[ident] = last_start = time.monotonic()
        except Exception as exc:
            failed[ident] = f"start: {exc}"
        if number % 10 == 0:
            log(f"{variant.name}: {number} started, {len(ready)} with sshd, "
                f"{len(failed)} failed")
    while booting:
        _poll_boots(variant, booting, ready, failed, timeout)
    return ready, failed, last_start


def _poll_boots(variant, booting, ready, failed, timeout):
    time.sleep(0.25)
    now = time.monotonic()
    for ident, since in list(booting.items()):
        if has_sshd(variant, ident):
            ready[ident] = now - since
        elif not group_pids(variant.group(ident)):
            failed[ident] = "the container ended (no process left in its cgroup)"
        elif now - since > timeout:
            failed[ident] = f"no sshd after {timeout} s"
        else:
            continue
        del booting[ident]


def cgroup_memory(relative):
    """The v1 memory group's usage and memory.stat totals (subgroups included), bytes."""
    top = Path(hierarchy_of("memory"), relative)
    figures = {"usage": int((top / "memory.usage_in_bytes").read_text())}
    kmem = top / "memory.kmem.usage_in_bytes"
    with contextlib.suppress(OSError, ValueError):
        figures["kmem_usage"] = int(kmem.read_text())
    for line in (top / "memory.stat").read_text().splitlines():
        name, value = line.split()
        if name in MEMSTAT_FIELDS:
            figures[name] = int(value)
    return figures


def environ(pid):
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)


def processes(variant, ids, run):
    """PSS of the containers' processes, and of the host-side helpers of this run (the
    processes outside the containers that serve them: our node watcher, its twin and
    lxcfs; LXC's monitors), kB; counts and names too."""
    inside = set()
    for ident in ids:
        inside |= group_pids(variant.group(ident))
    out = {kind: {"count": 0, "Rss": 0, "Pss": 0, "Pss_Anon": 0, "Pss_File": 0,
                  "Pss_Shmem": 0, "names": {}} for kind in ("container", "helper")}
    prefix = f"/{run.cgroup_prefix}/"
    helpers = {pid for pid in all_pids() - inside - {os.getpid()}
               if (proc_cgroup(pid) or "").startswith(prefix) or str(run.dir) in cmdline(pid)
               or environ(pid).get("VE_ROOT", "").startswith(str(run.dir))}
    for kind, pids in (("container", inside), ("helper", helpers)):
        bucket = out[kind]
        for pid in pids:
            name = comm(pid)
            if not name:
                continue  # gone meanwhile
            bucket["count"] += 1
            bucket["names"][name] = bucket["names"].get(name, 0) + 1
            for field, value in pss(pid).items():
                bucket[field] += value
    return out


def measure(variant, ids, args, run):
    """Make, measure and destroy ``len(ids)`` containers of ``variant``; return figures."""
    result = {"label": variant.label, "requested": len(ids)}
    t0 = time.monotonic()
    log(f"{variant.name}: making {len(ids)} containers")
    for number, ident in enumerate(ids, 1):
        variant.prepare(ident)
        if number % 10 == 0 or number == len(ids):
            log(f"{variant.name}: {number} made ({time.monotonic() - t0:.0f} s)")
    result["prepare_s"] = round(time.monotonic() - t0, 1)
    variant.start_node_services()
    # This process's group (and with it our node watcher and lxcfs) and the containers'.
    exclude = {proc_cgroup(os.getpid(), "memory"), f"/{run.cgroup_prefix}"}
    drop_caches()
    time.sleep(args.settle_before)
    before = meminfo_sample(exclude)
    t1 = time.monotonic()
    ready, failed, last_start = start_all(variant, ids, args.parallel, args.boot_timeout)
    result["boot_all_s"] = round(time.monotonic() - t1, 1)
    log(f"{variant.name}: {len(ready)} with sshd, {len(failed)} failed, in "
        f"{result['boot_all_s']} s; settling {args.settle} s")
    time.sleep(max(0.0, last_start + args.settle - time.monotonic()))
    after = meminfo_sample(exclude)
    running = [i for i in ids if group_pids(variant.group(i))]
    groups = [cgroup_memory(variant.group(i)) for i in running]
    procs = processes(variant, running, run)
    result.update(
        started=len(running), with_sshd=len(ready),
        failed={str(k): v for k, v in sorted(failed.items())[:10]}, failed_count=len(failed),
        seconds_to_sshd=_spread(list(ready.values())),
        meminfo_before_kib=before, meminfo_after_kib=after, processes=procs,
        per_container=per_container(before, after, groups, procs, len(running)))
    if running:
        try:
            result["boot_state_first"] = variant.boot_state(running[0])
        except Exception as exc:
            result["boot_state_first"] = f"could not ask: {exc}"
    result["measured_s"] = round(time.monotonic() - t0, 1)
    return result


def _spread(values):
    if not values:
        return None
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2),
            "min": round(min(values), 2)}


def per_container(before, after, groups, procs, n):
    """Each figure divided by the containers running, MiB."""
    if not n:
        return None
    mib = 1024 * n  # kB in /proc/meminfo and smaps_rollup

    def total(field):
        return sum(g.get(field, 0) for g in groups) / 2**20 / n

    own = procs["container"]
    drop = before["MemFree"] - after["MemFree"]
    return {
        "memfree_drop": drop / mib,
        "memfree_drop_less_others": (drop - (after["Others"] - before["Others"])) / mib,
        "memavailable_drop": (before["MemAvailable"] - after["MemAvailable"]) / mib,
        "cached_delta": (after["Cached"] - before["Cached"]) / mib,
        "anonpages_delta": (after["AnonPages"] - before["AnonPages"]) / mib,
        "shmem_delta": (after["Shmem"] - before["Shmem"]) / mib,
        "kernel_delta": sum(after[f] - before[f] for f in
                            ("SUnreclaim", "KernelStack", "PageTables", "Percpu")) / mib,
        "cgroup_usage": total("usage"),
        "cgroup_cache": total("total_cache"),
        "cgroup_rss": total("total_rss"),
        "cgroup_shmem": total("total_shmem"),
        "cgroup_kmem": total("kmem_usage"),
        "pss": own["Pss"] / mib,
        "pss_anon": own["Pss_Anon"] / mib,
        "pss_file": own["Pss_File"] / mib,
        "pss_shmem": own["Pss_Shmem"] / mib,
        "processes": own["count"] / n,
        "helper_pss": procs["helper"]["Pss"] / mib,
        "helper_processes": procs["helper"]["count"] / n,
    }


def teardown(variant, run):
    """Stop and destroy the variant's containers; return what could not be removed."""
    t0 = time.monotonic()
    log(f"{variant.name}: stopping and destroying")
    problems = variant.destroy_all() + variant.stop_node_services() + variant.leftovers()
    for relative in variant.cgroups():
        survivors = kill_cgroup_tree(relative)
        if survivors:
            problems.append(f"processes survive in {relative}: {sorted(survivors)[:5]}")
        left = remove_cgroup_tree(relative)
        if left:
            problems.append(f"cgroups left: {left[:5]}")
    directory = run.path(variant.name)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        problems.append(f"could not remove {directory}")
    for problem in problems:
        log(f"{variant.name}: cleanup: {problem}")
    return round(time.monotonic() - t0, 1), problems


def run_variant(variant, ids, args, run):
    why = variant.unavailable()
    if why:
        log(f"{variant.name}: unavailable: {why}")
        return {"label": variant.label, "status": "unavailable", "reason": why}
    t0 = time.monotonic()
    result = {"status": "measured"}
    try:
        result.update(measure(variant, ids, args, run))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # report it, clean up, go on with the next variant
        log(f"{variant.name}: failed: {exc!r}")
        result.update(label=variant.label, status="failed", error=repr(exc))
    finally:
        with uninterrupted():
            result["teardown_s"], result["cleanup_problems"] = teardown(variant, run)
    result["total_s"] = round(time.monotonic() - t0, 1)
    log(f"{variant.name}: done in {result['total_s']} s")
    return result


# -- report ------------------------------------------------------------------------

ROWS = (
    ("memfree_drop", "**MemFree drop** (host memory, page cache included)"),
    ("memfree_drop_less_others", "  less what other cgroups grew meanwhile (others' tests)"),
    ("memavailable_drop", "MemAvailable drop"),
    ("cached_delta", "Cached growth (page cache + tmpfs)"),
    ("shmem_delta", "  of which Shmem (tmpfs: /run, journal)"),
    ("anonpages_delta", "AnonPages growth"),
    ("kernel_delta", "kernel: unreclaimable slab + stacks + page tables + percpu"),
    ("cgroup_usage", "memory cgroup usage_in_bytes"),
    ("cgroup_cache", "  memory.stat total_cache"),
    ("cgroup_rss", "  memory.stat total_rss"),
    ("cgroup_kmem", "  memory.kmem.usage_in_bytes"),
    ("pss", "PSS of the container's processes"),
    ("pss_anon", "  PSS anon"),
    ("pss_file", "  PSS file"),
    ("pss_shmem", "  PSS shmem"),
    ("helper_pss", "PSS of host-side helpers (ours: node watcher + twin + lxcfs, / N)"),
)


def table(results, count):
    names = list(results)
    lines = [f"**Host memory per idle Debian 12 container (systemd + sshd), N={count}**, "
             "MiB per container", "",
             "| per container | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for key, label in ROWS + (("processes", "processes in it"),
                              ("helper_processes", "host-side helper processes"),):
        cells = []
        for name in names:
            per = results[name].get("per_container")
            cells.append(f"{per[key]:.2f}" if per else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for key, label in (("started", "running / with sshd"),
                       ("others", "other memory cgroups grew meanwhile, MiB (whole host)"),
                       ("seconds_to_sshd", "boot to sshd, s"),
                       ("boot_state_first", "systemd state (first)"),
                       ("prepare_s", "make N, s"), ("boot_all_s", "start N until all sshd, s"),
                       ("teardown_s", "stop + destroy N, s")):
        cells = []
        for name in names:
            r = results[name]
            if r.get("status") != "measured":
                cells.append(f"{r.get('status')}: {r.get('reason') or r.get('error')}"
                             if key == "started" else "")
            elif key == "started":
                cells.append(f"{r['started']} / {r['with_sshd']}")
            elif key == "others":
                grew = r["meminfo_after_kib"]["Others"] - r["meminfo_before_kib"]["Others"]
                cells.append(f"{grew / 1024:+.0f}")
            elif key == "seconds_to_sshd" and r[key]:
                cells.append(f"{r[key]['median']} (max {r[key]['max']})")
            else:
                cells.append(str(r.get(key, "")))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *goal_lines(results)]
    return "\n".join(lines)


def goal_lines(results):
    """Issue 17 part 3: >= 30% less host memory per idle VE than today. Judged on the
    MemFree drop less what other cgroups grew (people's tests on this machine move
    the bare drop by more than the goal), with the bare drop and the containers'
    own memory cgroups beside it."""
    def per(name, key="memfree_drop_less_others"):
        r = results.get(name, {})
        return (r.get("per_container") or {}).get(key)

    lines = []
    if per("today") and per("lxc"):
        lines.append(f"- today vs LXC: {per('today'):.2f} vs {per('lxc'):.2f} MiB per container "
                     f"(x{per('today') / per('lxc'):.2f}) from the MemFree drop less others, "
                     f"{per('today', 'cgroup_usage'):.2f} vs {per('lxc', 'cgroup_usage'):.2f} "
                     f"(x{per('today', 'cgroup_usage') / per('lxc', 'cgroup_usage'):.2f}) "
                     "from the memory cgroups")
    if per("today") and per("shared"):
        cut = 1 - per("shared") / per("today")
        also = ", ".join(
            f"{label} {1 - per('shared', key) / per('today', key):.0%} less "
            f"({per('shared', key):.2f} vs {per('today', key):.2f})"
            for key, label in (("memfree_drop", "bare MemFree drop"),
                               ("cgroup_usage", "memory cgroups")))
        lines.append(f"- **{'met' if cut >= 0.30 else 'missed'}**: >= 30% less host memory "
                     f"per idle Debian VE than today: {per('shared'):.2f} vs "
                     f"{per('today'):.2f} MiB ({cut:.0%} less; {also})")
    elif per("today"):
        lines.append("- goal (>= 30% less than today) not measured: the shared variant is "
                     + results.get("shared", {}).get("status", "not run"))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100,
                        help=f"idle containers per variant (1 to {MAX_COUNT})")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="which of today,shared,lxc, in this order")
    parser.add_argument("--template", default="debian-12")
    parser.add_argument("--parallel", type=int, default=4,
                        help="containers booting at once (2 cores: more only slows each)")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds after the last start before the reading")
    parser.add_argument("--settle-before", type=float, default=10.0,
                        help="seconds between dropping caches and the first reading")
    parser.add_argument("--boot-timeout", type=float, default=300.0,
                        help="seconds a container gets to run sshd")
    parser.add_argument("--rebuild-template", action="store_true",
                        help="build the template again with debootstrap")
    parser.add_argument("--output", default=str(RESULTS_DIR / "density.json"))
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be 1 to {MAX_COUNT} (the VEID ranges)")
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(chosen) - set(VARIANTS):
        parser.error(f"unknown variants: {set(chosen) - set(VARIANTS)}")
    require_root()
    started = time.time()
    remove_stale()
    run = Run(args.template)
    output = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "config": vars(args),
              "engine": _git_head(), "engine_uncommitted": _uncommitted(),
              "machine": machine_facts(),
              "variants": {}}
    lxc = None
    try:
        with interrupts_as_exceptions(), inotify_room(args.count, output["machine"]):
            run.tarball = ensure_template(args.template, args.rebuild_template)
            output["disk"] = check_space(run.tarball, args.count)
            for name in chosen:
                if name == "lxc":
                    variant = lxc = Lxc(run)
                    ids = range(FIRST_LXC, FIRST_LXC + args.count)
                else:
                    variant = (Ours if name == "today" else OursShared)(run)
                    ids = range(FIRST_VEID, FIRST_VEID + args.count)
                output["variants"][name] = run_variant(variant, list(ids), args, run)
                write_json(args.output, output)  # what is done so far
    finally:
        with uninterrupted():
            if lxc is not None:
                lxc.close()
            output["cleanup_problems"] = run.cleanup()
            for problem in output["cleanup_problems"]:
                log(f"cleanup: {problem}")
    output["wall_s"] = round(time.time() - started, 1)
    print(table(output["variants"], args.count))
    write_json(args.output, output)
    log(f"results in {args.output}")
    return 1 if output["cleanup_problems"] else 0


def machine_facts():
    """common.machine's facts. The engine runs in this process here, not through
    vectl (whose interpreter machine() reads from its #! line): name ours instead."""
    with tempfile.NamedTemporaryFile("w", suffix=".py") as shim:
        shim.write(f"#!{sys.executable}\n")
        shim.flush()
        facts = machine(shim.name)
    facts["python_engine"] = facts.pop("python_vectl")
    return facts


def _uncommitted():
    """Engine files that differ from the commit (the shared variant may be work under way)."""
    out = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "status",
                          "--porcelain", "--", "ve"], capture_output=True, text=True).stdout
    return out.splitlines()


def _git_head():
    return subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse",
                           "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
