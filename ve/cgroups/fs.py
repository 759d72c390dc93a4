"""The one place that reads and writes cgroup files.

``CgroupFS`` takes paths relative to a root so that tests can point a driver
at a temporary directory tree that mimics cgroupfs. ``/proc/<pid>/cgroup`` and
``/proc/self/mountinfo`` are read here too, for the same reason: a test
subclass can override ``proc_cgroup`` to feed a driver fake membership lines.
The two process helpers at the end (``poll``, ``sigkill``) are shared by the
v1 and v2 drivers.
"""

import errno
import os
import signal
import time

# v1 controllers a hierarchy can carry (``name=systemd`` style ones are ignored).
V1_CONTROLLERS = frozenset(
    "cpu cpuacct cpuset memory devices freezer blkio pids hugetlb net_cls "
    "net_prio perf_event rdma misc".split()
)


class CgroupFS:
    """Read, write and list cgroup files below ``root``."""

    def __init__(self, root):
        self.root = os.path.abspath(root)

    def path(self, rel=""):
        """Return the absolute path of ``rel``, which may not climb out with ``..``."""
        rel = str(rel).lstrip("/")
        if ".." in rel.split("/"):
            raise ValueError(f"cgroup path {rel!r} leaves the cgroup tree")
        return os.path.join(self.root, rel)

    def read(self, rel):
        """Return the text of a cgroup file, stripped."""
        # Bytes decoded here: a text file of encoding "ascii" would import its codec
        # module, which str.decode does without.
        with open(self.path(rel), "rb") as handle:
            return handle.read().decode("ascii").strip()

    def write(self, rel, value):
        """Write ``value`` with one write(2), as the kernel parses each write whole."""
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, str(value).encode("ascii"))
        finally:
            os.close(fd)

    def exists(self, rel):
        """Tell whether ``rel`` exists."""
        return os.path.exists(self.path(rel))

    def mkdir(self, rel):
        """Make the group ``rel``; an existing one is fine."""
        try:
            os.mkdir(self.path(rel))
        except FileExistsError:
            pass

    def rmdir(self, rel):
        """Remove the (empty of tasks) group ``rel``; a missing one is fine."""
        try:
            os.rmdir(self.path(rel))
        except FileNotFoundError:
            pass

    def children(self, rel):
        """Return the names of the child groups of ``rel`` ([] if it is missing)."""
        try:
            with os.scandir(self.path(rel)) as entries:
                return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def procs(self, rel):
        """Return the PIDs in group ``rel`` and every group below it (empty if missing)."""
        found = set()
        for group in self.walk(rel):
            try:
                found.update(int(pid) for pid in self.read(f"{group}/cgroup.procs").split())
            except OSError as exc:
                # Removed while we walked (ENOENT; ENODEV: its files still open but the
                # group gone, as when a VE's systemd removes init.scope while it stops).
                if exc.errno not in (errno.ENOENT, errno.ENODEV):
                    raise
        return found

    def remove(self, rel):
        """Remove group ``rel`` and its subgroups; return False while the kernel says EBUSY."""
        try:
            for group in list(self.walk(rel)):
                self.rmdir(group)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            return False
        return True

    def walk(self, rel):
        """Yield ``rel`` and every group below it, deepest first (the rmdir order)."""
        for child in self.children(rel):
            yield from self.walk(f"{rel}/{child}")
        if self.exists(rel):
            yield rel

    def proc_cgroup(self, pid):
        """Return the text of ``/proc/<pid>/cgroup`` (raises OSError if the pid is gone)."""
        with open(f"/proc/{int(pid)}/cgroup", encoding="utf-8") as handle:
            return handle.read()


def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return field.encode().decode("unicode_escape") if "\\" in field else field


def cgroup_mounts(text=None):
    """Parse mountinfo into ``{"v1": {controller: mount point}, "v2": [mount points]}``.

    Co-mounted controllers (``cpu,cpuacct``) map to the same mount point; the
    first mount of a hierarchy wins over later bind mounts of it.
    """
    if text is None:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            text = handle.read()
    found = {"v1": {}, "v2": []}
    for line in text.splitlines():
        head, _, tail = line.partition(" - ")
        fields, extra = head.split(), tail.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        point = _unescape(fields[4])
        if extra[0] == "cgroup2":
            found["v2"].append(point)
        elif extra[0] == "cgroup":
            for option in extra[2].split(","):
                if option in V1_CONTROLLERS or option.startswith("name="):
                    found["v1"].setdefault(option, point)
    return found


def poll(predicate, timeout, step=0.005):
    """Call ``predicate`` every ``step`` seconds until it is true; return its last value."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()) and time.monotonic() < deadline:
        time.sleep(step)
    return result


def sigkill(pids):
    """Send SIGKILL to each of ``pids``, skipping those already gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
