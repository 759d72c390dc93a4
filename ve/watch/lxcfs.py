"""Keep one lxcfs serving the node's VEs, and their /proc views alive with it.

The node watcher owns an ``LxcfsSupervisor``: ``ensure()`` once at start
(an lxcfs already serving the directory is used as it is; else one of ours
is started), then ``check(running)`` every few seconds. A check reads
``<dir>/proc/uptime`` in a helper with a timeout; an lxcfs that is dead
("Transport endpoint is not connected") or hung (no answer) is replaced:
a hung one of ours is killed (another one's FUSE connection is aborted),
the dead mount lazily unmounted, a new lxcfs started. Then every running
VE is brought in line: while an lxcfs serves, every VE reads its files
(stale binds are replaced, and a VE that has none, because it started
while lxcfs was down or was unbound, gets them); while none can be had,
stale binds are removed so that the VE reads the kernel's files (the
host's figures, but no errors).

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

from ..kernel import detach, libc, lxcfs_mounts
from ..log import get as get_logger

log = get_logger(__name__)

OPTIONS = ("-f", "-l", "--enable-cfs", "--enable-pidfd")
HEALTH_TIMEOUT = 2.0
START_TIMEOUT = 5.0
FUSECTL = "/sys/fs/fuse/connections"
LOCK_DIR = "/run/ve-lxcfs"


class LxcfsSupervisor:
    """One node's lxcfs at ``lxcfs_dir`` (default ``$VE_LXCFS`` or /var/lib/lxcfs;
    "off": none, every call does nothing).

    ``root``: the node's VE_ROOT (a path or an engine ``Layout``), which
    holds our lxcfs's pid file and log. ``binary``: the lxcfs to start
    (default: ``lxcfs`` on PATH). Supervisors of one directory (nodes
    simulated on one machine share /var/lib/lxcfs) take turns through the
    lock at ``lock_path``.
    """

    def __init__(self, root, lxcfs_dir=None, binary=None):
        root = Path(root if isinstance(root, (str, os.PathLike)) else root.root)
        self.run_dir = root / "run"
        self.pidfile = self.run_dir / "lxcfs.pid"
        self.logfile = root / "lxcfs.log"
        self.dir = lxcfs_dir or os.environ.get("VE_LXCFS", lxcfs_mounts.DEFAULT_DIR)
        self.binary = binary if binary is not None else shutil.which("lxcfs")
        name = lxcfs_mounts.host_path(self.dir).strip("/").replace("/", "_")
        self.lock_path = os.path.join(LOCK_DIR, f"{name}.lock")  # kept: others may wait on it
        if self.dir == "off":
            self.lock_path = None
        self.given_up = set()  # (veid, init pid) whose /proc refused our binds
        self.last_warning = None

    def ensure(self):
        """Return the directory once an lxcfs serves it, starting ours if needed; else None."""
        if self.dir == "off":
            return None
        with self._lock():
            return self.dir if self._healthy() or self._restart() else None

    def check(self, running):
        """Keep lxcfs, and the /proc views of ``running`` VEs ([(veid, init pid)]), serving.

        Returns what it did: {"lxcfs": "ok" | "restarted" | "unavailable" |
        "off", "rebound": [veid], "unbound": [veid], "failed": {veid: reason}}.
        "rebound" includes VEs that got lxcfs files for the first time.
        """
        done = {"lxcfs": "off", "rebound": [], "unbound": [], "failed": {}}
        if self.dir == "off":
            return done
        with self._lock():
            done["lxcfs"] = "ok" if self._healthy() else \
                "restarted" if self._restart() else "unavailable"
        self.given_up &= {tuple(ve) for ve in running}
        device = lxcfs_mounts.mounted_device(self.dir)
        for veid, pid in running:
            self._check_ve(veid, pid, device, done)
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
            # lxcfs 5.0 unmounts on SIGTERM but then hangs joining its threads.
            if not _wait_gone(pid, 1.0):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5.0)
        self._unmount()

    # -- steps -------------------------------------------------------------------

    def _check_ve(self, veid, pid, device, done):
        """Re-bind or unbind one VE if it needs it; note what was done in ``done``.

        ``device``: that of the serving lxcfs, None if none could be had.
        """
        serving = done["lxcfs"] != "unavailable"
        try:
            state = lxcfs_mounts.bound_state(pid, self.dir, device)
            if state == "current" or state == "absent" and \
                    (not serving or (veid, pid) in self.given_up):
                return
            if serving:
                report, key = lxcfs_mounts.rebind(pid, self.dir), "rebound"
            else:
                report, key = lxcfs_mounts.unbind(pid), "unbound"
        except OSError as exc:  # the VE stopped meanwhile, or the helper timed out
            done["failed"][veid] = str(exc)
            return
        if report["done"]:
            done[key].append(veid)
        if report["failed"]:  # the VE's own doing (it unmounted its /proc, say)
            self.given_up.add((veid, pid))
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
            return self._warn("lxcfs is not installed: VEs see the host's /proc figures")
        os.makedirs(self.dir, 0o755, exist_ok=True)
        if not lxcfs_mounts.traversable(self.dir):
            return self._warn(f"VE root cannot reach {self.dir} (a directory above it is "
                              "not world-traversable): VEs see the host's /proc figures")
        pid = self._spawn()
        if not _wait_serving(self.dir, pid, START_TIMEOUT):
            return self._warn(f"lxcfs did not start at {self.dir} (see {self.logfile})")
        log.warning("lxcfs started at %s, PID %s", self.dir, pid)
        self.last_warning = None
        return True

    def _warn(self, message):
        """Log ``message`` once (checks repeat every few seconds); return False."""
        if message != self.last_warning:
            log.warning("%s", message)
            self.last_warning = message
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
        for _ in range(16):  # bounded: each round removes the topmost one
            if lxcfs_mounts.mounted_device(self.dir) is None:
                return
            libc.umount2(self.dir, libc.MNT_DETACH)

    def _spawn(self):
        """Start lxcfs detached (nobody's child, own session); return its PID."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, *OPTIONS, "-p", str(self.pidfile), self.dir]
        return detach.spawn(argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                            str(self.logfile), _never_oom_kill)

    @contextmanager
    def _lock(self):
        """Serialise the supervisors of one directory.

        Nodes simulated on one machine have their own VE_ROOTs but share
        /var/lib/lxcfs: only one of them may replace a dead lxcfs. The lock
        lives in a root-only directory (a lock others can open, they could hold).
        """
        os.makedirs(LOCK_DIR, 0o700, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _never_oom_kill():
    """Every VE's /proc depends on lxcfs: the OOM killer must pick anything else.

    Needs CAP_SYS_RESOURCE, which some hosts (and these test machines) lack.
    """
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("-1000")
    except OSError:
        pass


def _wait_serving(lxcfs_dir, pid, timeout):
    """Wait until lxcfs ``pid`` serves ``lxcfs_dir``; False if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lxcfs_mounts.mounted_device(lxcfs_dir):
            return lxcfs_mounts.responds(lxcfs_dir, HEALTH_TIMEOUT)
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
