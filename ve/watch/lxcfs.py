"""Keep one lxcfs serving the node's VEs, and their /proc views alive with it.

The node watcher owns an ``LxcfsSupervisor``: ``ensure()`` once at start
(an lxcfs already serving the directory is used as it is; else one of ours
is started), then ``check(running)`` every few seconds. A check reads
``<dir>/proc/uptime`` in a helper with a timeout; an lxcfs that is dead
("Transport endpoint is not connected") or hung (no answer) is replaced:
a hung one of ours is killed (another one's FUSE connection is aborted),
the dead mount lazily unmounted, a new lxcfs started. Then every running VE
whose binds are stale is re-bound to the new lxcfs, or, when none can be
had, unbound so that it reads the kernel's files (the host's figures, but
no errors); those get lxcfs again once one serves.

Our lxcfs runs with its own pid file under VE_ROOT/run (a distribution's
lxcfs uses /run/lxcfs.pid), per-VE load averages (``-l``), CPU views that
follow the CFS quota (``--enable-cfs``) and pidfds; it is nobody's child and
outlives the watcher, as the VEs do.
"""

import fcntl
import os
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from ..kernel import libc, lxcfs_mounts
from ..log import get as get_logger

log = get_logger(__name__)

OPTIONS = ("-f", "-l", "--enable-cfs", "--enable-pidfd")
HEALTH_TIMEOUT = 2.0
START_TIMEOUT = 5.0
FUSECTL = "/sys/fs/fuse/connections"


class LxcfsSupervisor:
    """One node's lxcfs at ``lxcfs_dir`` (default ``$VE_LXCFS`` or /var/lib/lxcfs).

    ``root``: the node's VE_ROOT (a path or an engine ``Layout``), which
    holds our lxcfs's pid file, lock and log. ``binary``: the lxcfs to
    start (default: ``lxcfs`` on PATH); None where none is installed.
    """

    def __init__(self, root, lxcfs_dir=None, binary=None):
        root = Path(getattr(root, "root", root))
        self.run_dir = root / "run"
        self.pidfile = self.run_dir / "lxcfs.pid"
        self.logfile = root / "lxcfs.log"
        self.dir = lxcfs_dir or os.environ.get("VE_LXCFS", lxcfs_mounts.DEFAULT_DIR)
        self.binary = binary if binary is not None else shutil.which("lxcfs")
        self.unbound = set()  # (veid, init pid) of VEs we fell back for

    def ensure(self):
        """Return the directory once an lxcfs serves it, starting ours if needed; else None."""
        if self.dir == "off":
            return None
        with self._lock():
            if self._healthy():
                return self.dir
            return self.dir if self._restart() else None

    def check(self, running):
        """Keep lxcfs and the binds of ``running`` VEs ([(veid, init pid)]) serving.

        Returns what it did: {"lxcfs": "ok" | "restarted" | "unavailable" |
        "off", "rebound": [veid], "unbound": [veid], "failed": {veid: reason}}.
        """
        done = {"lxcfs": "off", "rebound": [], "unbound": [], "failed": {}}
        if self.dir == "off":
            return done
        with self._lock():
            done["lxcfs"] = "ok" if self._healthy() else \
                "restarted" if self._restart() else "unavailable"
        serving = done["lxcfs"] != "unavailable"
        self.unbound &= set(running)  # forget VEs that stopped
        for veid, pid in running:
            self._check_ve(veid, pid, serving, done)
        return done

    def pid(self):
        """The PID of our lxcfs (from its pid file) if it runs, else None."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if os.fsencode(str(self.pidfile)) in argv else None

    def stop(self):
        """Stop our lxcfs and unmount its directory (VEs' binds of it go stale)."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 5.0) or os.kill(pid, signal.SIGKILL)
        self._unmount()

    # -- steps -------------------------------------------------------------------

    def _check_ve(self, veid, pid, serving, done):
        try:
            state = lxcfs_mounts.bound_state(pid, self.dir)
            if state == "stale" and serving or \
                    state == "absent" and serving and (veid, pid) in self.unbound:
                report = lxcfs_mounts.rebind(pid, self.dir)
                self.unbound.discard((veid, pid))
                key = "rebound"
            elif state == "stale":
                report = lxcfs_mounts.unbind(pid)
                self.unbound.add((veid, pid))
                key = "unbound"
            else:
                return
        except OSError as exc:  # the VE stopped meanwhile, or the helper timed out
            done["failed"][veid] = str(exc)
            return
        done[key].append(veid)
        if report["failed"]:
            done["failed"][veid] = "; ".join(f"{t}: {r}" for t, r in report["failed"].items())
        log.info("lxcfs: VE %s %s (%s)", veid, key, report)

    def _healthy(self):
        return lxcfs_mounts.mounted_device(self.dir) is not None and \
            lxcfs_mounts.responds(self.dir, HEALTH_TIMEOUT)

    def _restart(self):
        """Replace whatever is at the directory with a new lxcfs of ours; True once it serves."""
        self._end_hung()
        self._unmount()
        if not self.binary or not os.access(self.binary, os.X_OK):
            log.warning("lxcfs is not installed: VEs see the host's /proc figures")
            return False
        os.makedirs(self.dir, 0o755, exist_ok=True)
        if not lxcfs_mounts.traversable(self.dir):
            log.warning("lxcfs: VE root cannot reach %s (a directory above it is not "
                        "world-traversable): VEs start without it", self.dir)
            return False
        pid = self._spawn()
        if _wait_serving(self.dir, pid, START_TIMEOUT):
            log.warning("lxcfs (re)started at %s, PID %s", self.dir, pid)
            return True
        log.warning("lxcfs did not start at %s (see %s)", self.dir, self.logfile)
        return False

    def _end_hung(self):
        """Make a hung lxcfs let go: kill ours, abort another one's FUSE connection."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 2.0)
            return
        device = lxcfs_mounts.mounted_device(self.dir)
        if device:
            _abort_connection(device)

    def _unmount(self):
        """Lazily unmount every lxcfs stacked at the directory (VEs keep theirs till re-bound)."""
        while lxcfs_mounts.mounted_device(self.dir):
            libc.umount2(self.dir, libc.MNT_DETACH)

    def _spawn(self):
        """Start lxcfs detached (nobody's child, own session); return its PID."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, *OPTIONS, "-p", str(self.pidfile), self.dir]
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        middle = os.fork()
        if middle == 0:
            try:
                os.setsid()
                pid = os.fork()
                if pid == 0:
                    _exec_lxcfs(argv, str(self.logfile))
                os.write(write_end, str(pid).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(middle, 0)
        with os.fdopen(read_end, "rb") as pipe:
            return int(pipe.read() or 0)

    @contextmanager
    def _lock(self):
        """Serialise supervisors of one node (a watcher and a test, say)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / "lxcfs.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _exec_lxcfs(argv, logfile):
    """Grandchild body: stdio to the log, no inherited descriptors, never OOM-killed."""
    try:
        out = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        libc.close_fds_from(3)
        os.chdir("/")
        # Every VE's /proc depends on it: the OOM killer must pick anything else.
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("-1000")
        os.execve(argv[0], argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    finally:
        os._exit(127)


def _wait_serving(lxcfs_dir, pid, timeout):
    """Wait until an lxcfs serves ``lxcfs_dir``; False if ``pid`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lxcfs_mounts.serving(lxcfs_dir):
            return True
        if not pid or _wait_gone(pid, 0.02):
            return False
    return False


def _wait_gone(pid, timeout):
    """True once ``pid`` has exited (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                if handle.read().rpartition(b")")[2].split()[0] == b"Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _abort_connection(device):
    """Abort the FUSE connection of ``device`` ("0:42"): its reads fail at once."""
    if not os.listdir(FUSECTL):  # fusectl not mounted (systemd mounts it; others may not)
        try:
            libc.mount("fusectl", FUSECTL, "fusectl")
        except OSError as exc:
            log.warning("lxcfs: cannot mount fusectl to abort a hung lxcfs: %s", exc)
            return
    try:
        with open(os.path.join(FUSECTL, device.split(":")[1], "abort"), "w") as handle:
            handle.write("1")
    except OSError as exc:
        log.warning("lxcfs: cannot abort the FUSE connection %s: %s", device, exc)
