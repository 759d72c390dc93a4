"""cgroup v2 driver: one group per VE at ``<root>/<parent>/<name>``.

create() enables cpu, cpuset, io, memory and pids (those the root offers) in
``cgroup.subtree_control`` of the root and of every parent level. memory and
pids are required: create() and apply() raise ``Unsupported`` without them
unless the driver was built with ``require_controllers=False``. Limit files of
an absent controller are skipped with a warning and its usage counters read 0,
so hierarchy operations (join, list, kill, remove) still work on a cgroup2
mount that carries no controllers.
"""

import contextlib
import errno
import os

from ..errors import Unsupported
from . import mapping
from .base import IO_FIELDS, CgroupDriver, Usage
from .fs import poll, sigkill
from ..log import get as get_logger

log = get_logger(__name__)

REQUIRED = ("memory", "pids")
# What a delegatee may write in the group it is given (the kernel's list, less
# memory.oom.group and memory.reclaim, which no init needs): never a limit.
DELEGATED_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")
WANTED = ("cpu", "cpuset", "io", "memory", "pids")
UNLIMITED = 2**63 - 1  # what memory_limit reports for "max"


class CgroupV2Driver(CgroupDriver):
    """Manage VE groups on a cgroup2 (unified) hierarchy."""

    version = 2

    def __init__(self, fs, parent="ve", require_controllers=True):
        """Use the cgroup2 tree at ``fs.root``, VE groups under ``parent``."""
        super().__init__(fs, parent)
        self.require_controllers = require_controllers

    def _dir(self, name=None):
        return self.parent if name is None else f"{self.parent}/{name}"

    def _controllers(self, group=""):
        return set(self.fs.read(f"{group}/cgroup.controllers").split())

    def _check(self):
        missing = [c for c in REQUIRED if c not in self._controllers()]
        if missing and self.require_controllers:
            raise Unsupported(f"cgroup v2 controller not available: {', '.join(missing)}")

    def create(self, name, limits):
        """Make the parent levels and the group, delegate controllers, apply ``limits``."""
        self._check()
        enable = [c for c in WANTED if c in self._controllers()]
        group = ""
        for level in self.parent.split("/"):
            self._enable(group, enable)
            group = f"{group}/{level}".lstrip("/")
            self.fs.mkdir(group)
        self._enable(group, enable)
        self.fs.mkdir(self._dir(name))
        self.apply(name, limits)

    def _enable(self, group, controllers):
        path = f"{group}/cgroup.subtree_control"
        todo = [c for c in controllers if c not in self.fs.read(path).split()]
        if todo:
            self.fs.write(path, " ".join(f"+{c}" for c in todo))

    def apply(self, name, limits):
        """Write ``limits`` into the group (v2 limits are independent: any order)."""
        self._check()
        group = self._dir(name)
        present = self._controllers(group)
        cpus = self.fs.read(f"{self._dir()}/cpuset.cpus.effective") if "cpuset" in present else ""
        for filename, value in mapping.v2_files(limits, cpus):
            path = f"{group}/{filename}"
            if self.fs.exists(path):
                self.fs.write(path, value)
            elif mapping.controller_of(filename) in REQUIRED and self.require_controllers:
                raise Unsupported(f"cgroup file {filename} is missing (swap accounting off?)")
            else:
                log.warning("cgroup v2: %s unavailable, VE %s runs without it", filename, name)

    def delegate(self, name, owner):
        """Give VE root (host uid/gid ``owner``) the group to manage inside, as systemd does.

        VE root may then make subgroups, move its processes between them and
        enable the controllers the group has for them; the group's own limits
        stay host root's.
        """
        delegate_group(self.fs, self._dir(name), owner)

    def apply_io(self, name, limits, device, reset_weight=False):
        """Write io.max (and io.weight) for ``device`` (see the base class)."""
        group = self._dir(name)
        for filename, value in mapping.v2_io_files(limits, device, reset_weight):
            if not self.fs.exists(f"{group}/{filename}"):
                raise Unsupported(f"cannot limit I/O here: cgroup v2 file {filename} is missing"
                                  " (io controller off, or no iocost/BFQ for weights)")
            self.fs.write(f"{group}/{filename}", value)

    def procs_files(self, name):
        """Return the group's ``cgroup.procs`` path (one hierarchy)."""
        return [self.fs.path(f"{self._dir(name)}/cgroup.procs")]

    def join_files(self, name, cloned=False, leaf=""):
        """Return ``cgroup.procs`` of the group or its subgroup ``leaf`` (v2 moves whole
        processes), or nothing if ``cloned``."""
        group = "/".join(filter(None, (self._dir(name), leaf)))
        return [] if cloned else [self.fs.path(f"{group}/cgroup.procs")]

    def file_path(self, name, filename):
        """Return the path of ``filename`` in the group."""
        return self.fs.path(f"{self._dir(name)}/{filename}")

    def clone_target(self, name):
        """Return the group's directory: VEs are born in it (see the base class)."""
        return self.fs.path(self._dir(name))

    def pids(self, name):
        """Return the PIDs in the group and its subgroups."""
        return sorted(self.fs.procs(self._dir(name)))

    def exists(self, name):
        """Tell whether the group exists."""
        return self.fs.exists(self._dir(name))

    def kill(self, name, timeout=5.0):
        """SIGKILL everything in the group until it is empty; OSError after ``timeout``."""
        group = self._dir(name)

        def emptied():
            if not self.fs.procs(group):
                return True
            if self.fs.exists(f"{group}/cgroup.kill"):
                self.fs.write(f"{group}/cgroup.kill", 1)  # 5.14+: atomic, forks included
            else:
                with self._frozen(group):
                    sigkill(self.fs.procs(group))  # listed while frozen: no fork slips past
            return False

        if not poll(emptied, timeout):
            raise OSError(errno.EBUSY, f"cgroup {group}: processes survive SIGKILL")

    def frozen(self, name):
        return self._frozen(self._dir(name))

    @contextlib.contextmanager
    def _frozen(self, group):
        # Frozen tasks cannot fork, so no child escapes between listing and killing.
        self.fs.write(f"{group}/cgroup.freeze", 1)
        try:
            poll(lambda: "frozen 1" in self.fs.read(f"{group}/cgroup.events"), 1.0)
            yield
        finally:
            self.fs.write(f"{group}/cgroup.freeze", 0)

    def destroy(self, name, timeout=5.0):
        """Wait for the group to empty, then remove it and its subgroups; OSError on timeout."""
        group = self._dir(name)
        if not poll(lambda: not self.fs.procs(group) and self.fs.remove(group), timeout):
            raise OSError(errno.EBUSY, f"cgroup {group} still has processes")

    def usage(self, name):
        """Read the group's counters (0 for a controller the group lacks)."""
        group = self._dir(name)
        present = self._controllers(group)
        events = self._keyed(group, "memory.events", present)
        return Usage(
            cpu_ns=self._keyed(group, "cpu.stat", present).get("usage_usec", 0) * 1000,
            memory=self._int(group, "memory.current", present),
            memory_limit=self._int(group, "memory.max", present),
            swap=self._int(group, "memory.swap.current", present),
            processes=self._int(group, "pids.current", present),
            memory_failcnt=events.get("max", 0),
            oom_kills=events.get("oom_kill", 0),
            **dict(zip(IO_FIELDS, mapping.v2_io_totals(
                self._text(group, "io.stat", present) or ""))),
            memory_reclaimable=self._keyed(group, "memory.stat", present).get("inactive_file", 0),
        )

    def footprint(self, name):
        """(RAM, swap, processes) of the group (see the base class)."""
        group = self._dir(name)
        present = self._controllers(group)
        return tuple(self._int(group, f, present)
                     for f in ("memory.current", "memory.swap.current", "pids.current"))

    def _text(self, group, filename, present):
        """Return a file's text, or None where the kernel keeps no such counter."""
        try:
            return self.fs.read(f"{group}/{filename}")
        except FileNotFoundError:
            # An absent controller (require_controllers=False) or no swap accounting.
            absent = mapping.controller_of(filename) not in present
            if (absent or filename == "memory.swap.current") and self.fs.exists(group):
                return None
            raise

    def _int(self, group, filename, present):
        text = self._text(group, filename, present)
        return 0 if text is None else UNLIMITED if text == "max" else int(text)

    def _keyed(self, group, filename, present):
        text = self._text(group, filename, present) or ""
        pairs = (line.split() for line in text.splitlines())
        return {f[0]: int(f[1]) for f in pairs if len(f) == 2}

    def group_of(self, pid):
        """Return the VE name from the ``0::`` line of /proc/<pid>/cgroup."""
        try:
            paths = mapping.proc_cgroup_paths(self.fs.proc_cgroup(pid))
        except (FileNotFoundError, ProcessLookupError):
            return None
        return mapping.ve_name(paths.get(""), self.parent)


def delegate_group(fs, group, owner):
    """Hand cgroup2 group ``group`` to host uid/gid ``owner`` (systemd's
    CGROUP_DELEGATION.md): the directory and ``DELEGATED_FILES``, nothing else."""
    for rel in [group] + [f"{group}/{f}" for f in DELEGATED_FILES]:
        os.chown(fs.path(rel), owner, owner)
