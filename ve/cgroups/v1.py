"""cgroup v1 driver: one directory per VE in each controller hierarchy.

A VE lives in ``<mount>/<parent>/<name>`` of the memory (with memsw), cpu,
cpuacct, cpuset, pids, devices and freezer hierarchies; co-mounted controllers
(``cpu,cpuacct``) share one directory. On a hybrid host the VE also gets a
group in the cgroup2 mount (``unified``, no controllers there): otherwise its
processes stay in the caller's v2 group, which VE root could see by mounting
cgroup2 in its cgroup namespace. memory, pids, devices and freezer are
required (limits, the device allow-list and a race-free kill depend on them);
without cpu, cpuacct or cpuset the VE runs without those limits, with a
warning. ``require_controllers=False`` relaxes the required ones the same way.
"""

import contextlib
import errno

from ..errors import Unsupported
from . import mapping
from .base import IO_FIELDS, CgroupDriver, Usage
from .fs import poll, sigkill
from .v2 import delegate_group
from ..log import get as get_logger

log = get_logger(__name__)

REQUIRED = ("memory", "pids", "devices", "freezer")
OPTIONAL = ("cpu", "cpuacct", "cpuset")


class CgroupV1Driver(CgroupDriver):
    """Manage VE groups on a host with cgroup v1 hierarchies."""

    version = 1

    def __init__(self, fs, parent="ve", mounts=None, require_controllers=True, unified=None):
        """Use ``mounts``: controller -> hierarchy directory relative to ``fs.root``;
        ``unified``: the hybrid host's cgroup2 mount (relative too), if any."""
        super().__init__(fs, parent)
        # Every mounted hierarchy, not just the limiting ones: a VE left in the
        # caller's blkio or name=systemd group could mount that hierarchy in its
        # cgroup namespace and list the host's processes there.
        self.mounts = {c: m.strip("/") for c, m in (mounts or {}).items()}
        self.unified = unified.strip("/") if unified else None
        self.require_controllers = require_controllers

    def _dir(self, controller, name=None):
        base = f"{self.mounts[controller]}/{self.parent}"
        return base if name is None else f"{base}/{name}"

    def _hierarchies(self):
        hierarchies = list(dict.fromkeys(self.mounts.values()))  # co-mounts once, in order
        return hierarchies + [self.unified] if self.unified else hierarchies

    def _group_dirs(self, name):
        return [f"{h}/{self.parent}/{name}" for h in self._hierarchies()]

    def _check(self):
        missing = [c for c in REQUIRED if c not in self.mounts]
        if missing and self.require_controllers:
            raise Unsupported(f"cgroup v1 controller not mounted: {', '.join(missing)}")

    def create(self, name, limits):
        """Make the group in every hierarchy, restrict devices and apply ``limits``."""
        self._check()
        self._make_parent()
        for directory in self._group_dirs(name):
            self.fs.mkdir(directory)
        if "cpuset" in self.mounts:
            self._inherit_cpuset(self._dir("cpuset", name))
        if "devices" in self.mounts:
            self._restrict_devices(self._dir("devices", name))
        self.apply(name, limits)

    def _make_parent(self):
        levels = self.parent.split("/")
        for hierarchy in self._hierarchies():
            for depth in range(1, len(levels) + 1):
                group = "/".join([hierarchy] + levels[:depth])
                self.fs.mkdir(group)
                if hierarchy == self.mounts.get("cpuset"):
                    self._inherit_cpuset(group)
                if hierarchy == self.mounts.get("memory"):
                    # Old kernels need it before children exist; new ones accept only 1.
                    with contextlib.suppress(OSError):
                        self.fs.write(f"{group}/memory.use_hierarchy", 1)

    def _inherit_cpuset(self, group):
        # v1 cpuset children start empty and refuse tasks until cpus and mems are set.
        up = group.rsplit("/", 1)[0]
        for filename in ("cpuset.cpus", "cpuset.mems"):
            if not self.fs.read(f"{group}/{filename}"):
                self.fs.write(f"{group}/{filename}", self.fs.read(f"{up}/{filename}"))

    def _restrict_devices(self, group):
        # Rewrite only when different: "deny a" would briefly cut off a running VE.
        if set(self.fs.read(f"{group}/devices.list").splitlines()) != set(mapping.DEVICE_RULES):
            for filename, value in mapping.v1_devices():
                self.fs.write(f"{group}/{filename}", value)

    def apply(self, name, limits):
        """Write ``limits`` into the group, memory limits in a valid order."""
        self._check()
        memsw = self._int("memory", name, "memory.memsw.limit_in_bytes", optional=True)
        cpus = (self._read("cpuset", None, "cpuset.effective_cpus")
                if "cpuset" in self.mounts else "")
        for filename, value in mapping.v1_files(limits, cpus, memsw):
            self._write(name, filename, value)

    def apply_io(self, name, limits, device, reset_weight=False):
        """Write the blkio caps (and BFQ weight) for ``device`` (see the base class)."""
        for filename, value in mapping.v1_io_files(limits, device, reset_weight):
            path = f"{self._dir('blkio', name)}/{filename}" if "blkio" in self.mounts else None
            if path is None or not self.fs.exists(path):
                raise Unsupported(f"cannot limit I/O here: cgroup v1 file {filename} is missing"
                                  + (" (the kernel lacks BFQ group scheduling)"
                                     if filename == "blkio.bfq.weight" else ""))
            if filename == "blkio.bfq.weight":
                _use_bfq(device)  # BFQ weights act only on a device BFQ schedules
            self.fs.write(path, value)

    def _write(self, name, filename, value):
        controller = mapping.controller_of(filename)
        path = f"{self._dir(controller, name)}/{filename}" if controller in self.mounts else None
        if path and self.fs.exists(path):
            self.fs.write(path, value)
        elif controller in REQUIRED and self.require_controllers:
            raise Unsupported(f"cgroup file {filename} is missing (swapaccount=1 needed?)")
        else:
            log.warning("cgroup v1: %s unavailable, VE %s runs without it", filename, name)

    def _read(self, controller, name, filename):
        return self.fs.read(f"{self._dir(controller, name)}/{filename}")

    def _int(self, controller, name, filename, optional=False):
        """Read an integer file: 0 if the controller is not mounted, None if an
        ``optional`` file is missing (a kernel feature that is off)."""
        if controller not in self.mounts:
            return 0
        try:
            return int(self._read(controller, name, filename))
        except FileNotFoundError:
            if optional and self.fs.exists(self._dir(controller, name)):
                return None
            raise

    def procs_files(self, name):
        """Return one absolute ``cgroup.procs`` path per hierarchy."""
        return [self.fs.path(f"{d}/cgroup.procs") for d in self._group_dirs(name)]

    def join_files(self, name, cloned=False, leaf=""):
        """Return one ``tasks`` path per v1 hierarchy, plus the unified group's
        ``cgroup.procs`` (of its subgroup ``leaf``) unless ``cloned`` (see the base class)."""
        files = [self.fs.path(f"{h}/{self.parent}/{name}/tasks")
                 for h in dict.fromkeys(self.mounts.values())]
        if self.unified and not cloned:
            group = "/".join(filter(None, (self.unified, self.parent, name, leaf)))
            files.append(self.fs.path(f"{group}/cgroup.procs"))
        return files

    def file_path(self, name, filename):
        """Return the path of ``filename`` in the group, in its controller's hierarchy."""
        return self.fs.path(f"{self._dir(mapping.controller_of(filename), name)}/{filename}")

    def delegate(self, name, owner):
        """Give VE root (host uid/gid ``owner``) the group in the hybrid host's cgroup2 mount.

        That group carries no controllers, so VE root gains a tree to
        organise its processes in (what systemd needs) and no limit; the v1
        hierarchies stay host root's. Unsupported without a cgroup2 mount.
        """
        if not self.unified:
            raise Unsupported("this VE's init (systemd) needs a cgroup2 tree and this host "
                              "mounts only cgroup v1 hierarchies")
        delegate_group(self.fs, f"{self.unified}/{self.parent}/{name}", owner)

    def clone_target(self, name):
        """Return the unified group's directory on a hybrid host, else None."""
        return self.fs.path(f"{self.unified}/{self.parent}/{name}") if self.unified else None

    def pids(self, name):
        """Return the PIDs in the group in any hierarchy, subgroups included."""
        return sorted(set().union(*(self.fs.procs(d) for d in self._group_dirs(name))))

    def exists(self, name):
        """Tell whether the group exists in any hierarchy."""
        return any(self.fs.exists(d) for d in self._group_dirs(name))

    def kill(self, name, timeout=5.0):
        """Freeze, SIGKILL and thaw until the group is empty; OSError after ``timeout``."""
        def emptied():
            if not self.pids(name):
                return True
            with self._frozen(name):
                sigkill(self.pids(name))  # listed while frozen: no fork slips past
            return False

        if not poll(emptied, timeout):
            raise OSError(errno.EBUSY, f"cgroup {self.parent}/{name}: processes survive SIGKILL")

    def frozen(self, name):
        return self._frozen(name)

    @contextlib.contextmanager
    def _frozen(self, name):
        # Frozen tasks cannot fork, so no child escapes between listing and killing.
        if "freezer" not in self.mounts or not self.fs.exists(self._dir("freezer", name)):
            yield
            return
        state = f"{self._dir('freezer', name)}/freezer.state"
        self.fs.write(state, "FROZEN")
        try:
            # A task stuck in D state keeps it FREEZING; kill anyway after a second.
            poll(lambda: self.fs.read(state) == "FROZEN", 1.0)
            yield
        finally:
            self.fs.write(state, "THAWED")

    def destroy(self, name, timeout=5.0):
        """Wait for the group to empty, then remove it everywhere; OSError on timeout."""
        def removed():
            return not self.pids(name) and all([self.fs.remove(d) for d in self._group_dirs(name)])

        if not poll(removed, timeout):
            raise OSError(errno.EBUSY, f"cgroup {self.parent}/{name} still has processes")

    def usage(self, name):
        """Read the group's counters (0 for a controller this host does not mount)."""
        memory = self._int("memory", name, "memory.usage_in_bytes")
        # Without swap accounting (no memsw files) swap use is unknown: 0.
        memsw = self._int("memory", name, "memory.memsw.usage_in_bytes", optional=True)
        return Usage(
            cpu_ns=self._int("cpuacct", name, "cpuacct.usage"),
            memory=memory,
            memory_limit=self._int("memory", name, "memory.limit_in_bytes"),
            swap=max((memsw or memory) - memory, 0),
            processes=self._int("pids", name, "pids.current"),
            memory_failcnt=self._failcnt(name),
            oom_kills=self._oom_kills(name),
            **dict(zip(IO_FIELDS, self._io(name))),
            memory_reclaimable=self._stat(name).get("total_inactive_file", 0),
        )

    def footprint(self, name):
        """(RAM, swap, processes) of the group (see the base class)."""
        memory = self._int("memory", name, "memory.usage_in_bytes")
        memsw = self._int("memory", name, "memory.memsw.usage_in_bytes", optional=True)
        return memory, max((memsw or memory) - memory, 0), self._int("pids", name, "pids.current")

    def _stat(self, name):
        """memory.stat as {key: int} (empty without the memory controller)."""
        if "memory" not in self.mounts:
            return {}
        pairs = (line.split() for line in self._read("memory", name, "memory.stat").splitlines())
        return {f[0]: int(f[1]) for f in pairs if len(f) == 2}

    def _io(self, name):
        if "blkio" not in self.mounts:
            return 0, 0, 0, 0
        try:
            nbytes = mapping.v1_blkio_totals(self._read(
                "blkio", name, "blkio.throttle.io_service_bytes_recursive"))
            ops = mapping.v1_blkio_totals(self._read(
                "blkio", name, "blkio.throttle.io_serviced_recursive"))
        except FileNotFoundError:
            return 0, 0, 0, 0
        return nbytes + ops

    def _failcnt(self, name):
        # A charge is checked against memsw first and fails on at most one of the
        # two counters, so the sum counts every hit. Kernels since about 6.13 keep
        # memsw.failcnt at 0 (only memory tracks failcnt), so with swap 0, where
        # memsw always fills first, hits show only as oom_kills there.
        counts = (self._int("memory", name, f, optional=True)
                  for f in ("memory.failcnt", "memory.memsw.failcnt"))
        return sum(count or 0 for count in counts)

    def _oom_kills(self, name):
        if "memory" not in self.mounts:
            return 0
        # The "oom_kill" line appeared in 4.13; older kernels do not count kills.
        text = self._read("memory", name, "memory.oom_control")
        return next((int(f[1]) for f in map(str.split, text.splitlines()) if f[0] == "oom_kill"), 0)

    def group_of(self, pid):
        """Return the VE name from the pids (else memory) line of /proc/<pid>/cgroup."""
        try:
            paths = mapping.proc_cgroup_paths(self.fs.proc_cgroup(pid))
        except (FileNotFoundError, ProcessLookupError):
            return None
        return mapping.ve_name(paths.get("pids", paths.get("memory")), self.parent)


def _use_bfq(device):
    """Switch block device ``device`` ("MAJ:MIN") to the BFQ scheduler if it can."""
    try:
        with open(f"/sys/dev/block/{device}/queue/scheduler", "w") as f:
            f.write("bfq")
    except OSError as exc:
        log.warning("cannot schedule %s with BFQ (%s): its I/O weights have no effect",
                    device, exc)
