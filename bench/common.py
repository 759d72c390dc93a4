"""Shared plumbing of the benchmarks: packages, workspace, cgroups, /proc, statistics.

Nothing here knows about a particular runtime (see ``peers.py``). Everything
the benchmarks create lives under one workspace directory and one cgroup
prefix, ``vebench-<pid>``, so that ``Workspace.cleanup`` can remove all of it
(and a later run can remove what a killed run left behind).
"""

import contextlib
import ctypes
import errno
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "vebench-"
APT_PACKAGES = ("crun", "lxc", "busybox-static")


def log(message):
    """Progress line on stderr (stdout carries the result tables)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- set-up -------------------------------------------------------------------

def require_root():
    if os.geteuid() != 0:
        sys.exit("the benchmark creates containers and cgroups: run it as root")


def ensure_packages(packages=APT_PACKAGES):
    """apt-get install whatever of ``packages`` is missing (apt-get update first)."""
    missing = [p for p in packages if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
    ).stdout.strip() != "install ok installed"]
    if not missing:
        return
    log(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def import_engine():
    """Import the engine from this checkout (``bench/`` sits next to ``ve/``)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import ve  # noqa: F401  (fails early with a clear ImportError)
    from ve import Engine, Limits, VEConfig
    from ve.storage import unpack
    return Engine, VEConfig, Limits, unpack


def find_vectl():
    path = shutil.which("vectl") or "/usr/local/bin/vectl"
    if not os.access(path, os.X_OK):
        sys.exit("vectl is not installed: run `make deps` first")
    return path


# -- statistics ---------------------------------------------------------------

def percentile(values, q):
    """Linear-interpolated percentile (numpy's default), ``q`` in 0..100."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (pos - low)


def summary(values):
    """median, p90, min, max and n of a list of milliseconds (None if empty)."""
    if not values:
        return None
    return {"median": statistics.median(values), "p90": percentile(values, 90),
            "min": min(values), "max": max(values), "n": len(values)}


# -- machine ------------------------------------------------------------------

def _first_line(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def meminfo():
    """/proc/meminfo as {field: kB}."""
    values = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            name, rest = line.split(":", 1)
            values[name] = int(rest.split()[0])
    return values


def machine(vectl):
    """What the figures were measured on."""
    model = None
    hypervisor = False
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and " hypervisor" in line:
                hypervisor = True
    os_release = dict(
        line.rstrip("\n").split("=", 1) for line in open("/etc/os-release") if "=" in line)
    vectl_python = open(vectl).readline()[2:].split()[0]
    return {
        "cpu": model,
        "virtualised": hypervisor,
        "nproc": os.cpu_count(),
        "mem_total_mib": meminfo()["MemTotal"] // 1024,
        "kernel": platform.release(),
        "os": os_release.get("PRETTY_NAME", "").strip('"'),
        "debian_version": Path("/etc/debian_version").read_text().strip(),
        "crun": _first_line(["crun", "--version"]),
        "lxc": _first_line(["lxc-start", "--version"]),
        "busybox": _first_line(["busybox"]),
        "python_bench": platform.python_version() + " " + sys.executable,
        "python_vectl": _first_line([vectl_python, "--version"]) + " " + vectl_python,
        "cgroups": describe_cgroups(),
    }


def describe_cgroups():
    mounts = cgroup_mounts()
    v1 = sorted(k for k, v in mounts.items() if v != "cgroup2")
    v2 = [k for k, v in mounts.items() if v == "cgroup2"]
    return f"v1: {', '.join(v1)}; cgroup2 at {', '.join(v2) or 'none'}"


# -- cgroups ------------------------------------------------------------------

def cgroup_mounts():
    """{mount point: fstype} of every cgroup and cgroup2 mount."""
    found = {}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            head, _, tail = line.partition(" - ")
            fstype = tail.split()[0] if tail else ""
            if fstype in ("cgroup", "cgroup2"):
                found.setdefault(head.split()[4], fstype)
    return found


def hierarchy_of(controller):
    """Mount point of the v1 hierarchy carrying ``controller``, or None."""
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            head, _, tail = line.partition(" - ")
            parts = tail.split()
            if len(parts) >= 3 and parts[0] == "cgroup" and controller in parts[2].split(","):
                return head.split()[4]
    return None


def cgroup_pids(relative):
    """PIDs in the pids-hierarchy group ``relative`` and below (empty if missing)."""
    base = hierarchy_of("pids")
    found = set()
    top = Path(base, relative)
    if not top.is_dir():
        return found
    for directory, _, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in Path(directory, "cgroup.procs").read_text().split())
    return found


def kill_cgroup_tree(relative, timeout=10.0):
    """SIGKILL every process in ``relative`` (any hierarchy) until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set()
        for mount in cgroup_mounts():
            top = Path(mount, relative)
            if top.is_dir():
                for directory, _, files in os.walk(top):
                    if "cgroup.procs" in files:
                        with contextlib.suppress(OSError):
                            pids.update(int(p) for p in
                                        Path(directory, "cgroup.procs").read_text().split())
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def remove_cgroup_tree(relative, timeout=10.0):
    """rmdir ``relative`` and its subgroups in every hierarchy; return what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for mount in cgroup_mounts():
            top = Path(mount, relative)
            if not top.is_dir():
                continue
            for directory, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                        raise
                    left.append(directory)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# -- processes ----------------------------------------------------------------

def all_pids():
    return {int(name) for name in os.listdir("/proc") if name.isdigit()}


def proc_cgroup(pid, hierarchy="pids"):
    """The ``hierarchy`` path of ``pid`` from /proc/<pid>/cgroup, or None."""
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if hierarchy in controllers.split(","):
                return path
    except OSError:
        return None
    return None


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def pss(pid):
    """{Pss, Pss_Anon, Pss_File, Pss_Shmem, Rss} in kB from smaps_rollup (zeros if gone)."""
    fields = dict.fromkeys(("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem"), 0)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, rest = line.partition(":")
            if name in fields:
                fields[name] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return fields


def wait_gone(pid, timeout):
    """Wait for ``pid`` to exit (pidfd); True if it did within ``timeout`` s."""
    import select
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


# -- mount namespace switching (for crun) ------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000


def setns(fd, nstype=CLONE_NEWNS):
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class HelperMountNS:
    """A private mount namespace in which cgroup2's ``cgroup.controllers`` reads empty.

    crun 1.8 refuses this hybrid host ("cgroups in hybrid mode not
    supported") because the cgroup2 mount holds hugetlb; covering that file
    with an empty one makes it drive the v1 hierarchies, as it does on a
    plain v1 host. The namespace is made once; ``inside()`` moves this
    (single-threaded) process into it for one call and back, so the switch
    costs nothing inside a timed section and crun is spawned exactly like
    every other command.
    """

    def __init__(self, workdir):
        empty = Path(workdir, "empty-controllers")
        empty.write_text("")
        target = "/sys/fs/cgroup/unified/cgroup.controllers"
        unified = [m for m, t in cgroup_mounts().items() if t == "cgroup2"]
        self.proc = None
        self.host_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        if not unified:
            self.fd = None  # pure v1 host: crun needs no help
            return
        target = os.path.join(unified[0], "cgroup.controllers")
        script = f"mount --bind {empty} {target} && echo ready && exec sleep 1000000"
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("could not prepare the mount namespace for crun")
        self.fd = os.open(f"/proc/{self.proc.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        # The fd keeps the namespace alive; the placeholder process can go.
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    @contextlib.contextmanager
    def inside(self):
        if self.fd is None:
            yield
            return
        cwd = os.getcwd()
        setns(self.fd)
        try:
            yield
        finally:
            setns(self.host_fd)
            os.chdir(cwd)

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        for fd in (getattr(self, "fd", None), self.host_fd):
            if fd is not None:
                os.close(fd)
        self.fd = None


# -- timing a command ---------------------------------------------------------

class CommandFailed(RuntimeError):
    pass


def run_timed(argv, env=None, errlog=None, check=True, timeout=120):
    """Run ``argv`` to completion; return its wall time in ms.

    stdin/stdout are /dev/null and stderr goes to ``errlog`` (an open file):
    a detached container's init may inherit them, so no pipe is used that we
    would then wait on. The wait is a blocking waitpid: ``subprocess.run(...,
    timeout=)`` would poll with exponential back-off sleeps (0.5, 1, 2, ... 50
    ms) and round every time up to 7.5, 15.5, 31.5, 63.5, 113.5 ms. The
    timeout is a SIGALRM instead.
    """
    def expired(signum, frame):
        raise TimeoutError(f"{argv[0]} ran longer than {timeout} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(timeout)
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errlog if errlog is not None else subprocess.DEVNULL,
                                env=env)
        try:
            returncode = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        elapsed = (time.perf_counter() - start) * 1000
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if check and returncode != 0:
        raise CommandFailed(f"{' '.join(map(str, argv))} exited {returncode}"
                            + (f": {tail(errlog.name)}" if errlog is not None else ""))
    return elapsed


def tail(path, lines=5):
    try:
        return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# -- workspace ----------------------------------------------------------------

class Workspace:
    """One run's temporary directory and cgroup prefix, and their removal."""

    def __init__(self, base="/var/tmp"):
        self.pid = os.getpid()
        self.cgroup_prefix = f"{PREFIX}{self.pid}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.pid}-", dir=base))
        # Container roots (mapped uids) must be able to traverse down to their rootfs.
        os.chmod(self.dir, 0o711)
        self.cleanups = []  # callables, run last-registered first

    def path(self, *parts):
        return self.dir.joinpath(*parts)

    def on_cleanup(self, func):
        self.cleanups.append(func)
        return func

    def cleanup(self):
        """Undo everything; keep going past errors and report them."""
        problems = []
        for func in reversed(self.cleanups):
            try:
                func()
            except Exception as exc:  # cleanup must reach the end
                problems.append(f"{getattr(func, '__qualname__', func)}: {exc}")
        self.cleanups.clear()
        problems += cleanup_remains(self.cgroup_prefix, self.dir)
        for problem in problems:
            log(f"cleanup: {problem}")
        return problems


def cleanup_remains(cgroup_prefix, workdir):
    """Kill and remove whatever is left under ``cgroup_prefix`` and ``workdir``."""
    problems = []
    workdir = str(workdir)
    # Host-side helpers (LXC monitors) mention the workspace on their command line.
    for pid in all_pids():
        if pid != os.getpid() and workdir in cmdline(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    survivors = kill_cgroup_tree(cgroup_prefix)
    if survivors:
        problems.append(f"processes survive SIGKILL in {cgroup_prefix}: {sorted(survivors)}")
    left = remove_cgroup_tree(cgroup_prefix)
    if left:
        problems.append(f"cgroups left: {left[:5]}")
    lock_dir = Path("/run/lxc/lock", workdir.lstrip("/"))
    if lock_dir.exists():
        shutil.rmtree(lock_dir, ignore_errors=True)
        for parent in lock_dir.parents:
            if parent == Path("/run/lxc/lock"):
                break
            with contextlib.suppress(OSError):
                parent.rmdir()
    if os.path.isdir(workdir):
        shutil.rmtree(workdir, ignore_errors=True)
        if os.path.exists(workdir):
            problems.append(f"could not remove {workdir}")
    return problems


def cleanup_stale():
    """Remove what earlier runs that died (kill -9) left behind."""
    stale = set()
    for mount in cgroup_mounts():
        with contextlib.suppress(OSError):
            for name in os.listdir(mount):
                if name.startswith(PREFIX) and name[len(PREFIX):].isdigit():
                    stale.add(int(name[len(PREFIX):]))
    with contextlib.suppress(OSError):
        for name in os.listdir("/var/tmp"):
            match = re.match(rf"{PREFIX}(\d+)-", name)
            if match:
                stale.add(int(match.group(1)))
    for pid in sorted(stale):
        if pid == os.getpid() or _is_bench(pid):
            continue
        log(f"removing leftovers of an earlier run (pid {pid})")
        workdirs = [Path("/var/tmp", n) for n in os.listdir("/var/tmp")
                    if n.startswith(f"{PREFIX}{pid}-")]
        for workdir in workdirs or [Path("/nonexistent")]:
            for problem in cleanup_remains(f"{PREFIX}{pid}", workdir):
                log(f"stale cleanup: {problem}")


def _is_bench(pid):
    """Is ``pid`` a live benchmark process (another run going on now)?"""
    line = cmdline(pid)
    return "python" in line and any(
        s in line for s in ("run.py", "start_stop.py", "idle_memory.py"))


@contextlib.contextmanager
def interrupts_as_exceptions():
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` blocks run.

    SIGINT too: a job started with ``&`` from a script inherits it ignored.
    """
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


@contextlib.contextmanager
def uninterrupted():
    """Ignore Ctrl-C and friends while cleaning up."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def write_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def unmount_and_detach(workdir):
    """Unmount what is mounted below ``workdir`` and detach loop devices on its files
    (a destroy that failed half-way); return what could not be."""
    problems = []
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(str(workdir))]
    for target in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", "-l", target]).returncode:
            problems.append(f"mount {target} left")
    for name in os.listdir("/sys/block"):
        try:
            backing = Path(f"/sys/block/{name}/loop/backing_file").read_text()
        except OSError:
            continue
        if backing.startswith(str(workdir)) and \
                subprocess.run(["losetup", "-d", f"/dev/{name}"]).returncode:
            problems.append(f"loop device {name} left")
    return problems
