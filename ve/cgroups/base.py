"""The cgroup driver interface shared by the v1 and v2 implementations.

A driver manages one group per VE, named by its VEID, under a parent group
(``ve`` by default, configurable so tests use their own subtree). Drivers
touch cgroup files only through ``CgroupFS`` (``fs.py``) so that tests can run
them against a temporary directory tree that mimics cgroupfs.
"""

import abc
import os
from collections import namedtuple

from . import mapping

# Subgroups of a VE's cgroup2 group a checkpoint records (a systemd makes a few
# dozen; more only cost the VE a resume that falls back to a fresh start).
MAX_SUBGROUPS = 4096


class Usage(namedtuple("Usage", "cpu_ns memory memory_limit swap processes "
                                 "memory_failcnt oom_kills io_read_bytes io_write_bytes "
                                 "io_read_ops io_write_ops memory_reclaimable",
                       defaults=(0, 0, 0, 0, 0))):
    """What a VE's processes use right now.

    cpu_ns: CPU time consumed since the group was made; memory: RAM in use,
    bytes (page cache included, like vzlist's); memory_limit: the RAM limit in
    force; swap: swap in use; processes: tasks (processes and threads);
    memory_failcnt: times the RAM limit was hit (OpenVZ's failcnt);
    oom_kills: processes killed by the OOM killer inside the group;
    io_*: block I/O the group did since it was made, all devices (on v1 the
    throttle layer's count: reads and direct writes, not writeback);
    memory_reclaimable: the part of ``memory`` that is inactive file cache,
    which the kernel takes back first under pressure. ``memory`` minus it is
    the working set (what cAdvisor and Kubernetes call it too): what the VE
    needs, where ``memory`` grows towards the limit with any file reading.
    """

    __slots__ = ()


IO_FIELDS = ("io_read_bytes", "io_write_bytes", "io_read_ops", "io_write_ops")


class CgroupDriver(abc.ABC):
    """Create, limit, measure, kill and remove one cgroup per VE."""

    version = None  # 1 or 2

    def __init__(self, fs, parent="ve"):
        self.fs = fs
        self.parent = parent.strip("/")

    @abc.abstractmethod
    def create(self, name, limits):
        """Make the group (and the parent) and apply ``limits``; idempotent."""

    @abc.abstractmethod
    def apply(self, name, limits):
        """Change the limits of an existing group, live, in a safe order."""

    @abc.abstractmethod
    def apply_io(self, name, limits, device, reset_weight=False):
        """Cap the group's I/O to block device ``device`` ("MAJ:MIN") per ``limits``.

        Raises Unsupported if ``limits`` ask for a weight or cap this host
        cannot enforce. ``reset_weight``: write the default weight for 0.
        """

    @abc.abstractmethod
    def procs_files(self, name):
        """Return the ``cgroup.procs`` paths a process writes its PID into to join."""

    @abc.abstractmethod
    def join_files(self, name, cloned=False, leaf=""):
        """Return the files a single-threaded process writes ``0`` into to join itself.

        On v1 these are ``tasks`` files: moving one thread (``0`` = the writer)
        skips the global threadgroup lock whose RCU grace period otherwise
        costs 5-20 ms per start. With ``cloned``, leave out the hierarchy of
        ``clone_target`` (the process was born there). ``leaf``: a subgroup of
        the VE's cgroup2 group to join instead (a VE's systemd keeps its own
        tree there, whose inner groups take no processes).
        """

    def leaf_of(self, name, pid):
        """The subgroup of the VE's cgroup2 group that ``pid`` is in ("" for the group
        itself; also "" when ``pid`` is elsewhere or the path looks odd)."""
        try:
            path = mapping.proc_cgroup_paths(self.fs.proc_cgroup(pid)).get("", "")
        except OSError:
            return ""
        prefix = f"/{self.parent}/{name}"
        rest = path[len(prefix):] if path == prefix or path.startswith(prefix + "/") else ""
        parts = [p for p in rest.split("/") if p]
        return "/".join(parts) if all(p not in (".", "..") for p in parts) else ""

    def delegate(self, name, owner):
        """Give VE root (host uid/gid ``owner``) the group's cgroup2 subtree to manage,
        as an init such as systemd needs: see the implementations."""
        raise NotImplementedError

    def subgroups(self, name):
        """The subgroups of the VE's cgroup2 group, as paths relative to it, parents
        first ([] without a cgroup2 group): the tree a VE's systemd made."""
        top = self.clone_target(name)
        if top is None:
            return []
        found = []
        for here, dirs, _ in os.walk(top):
            dirs.sort()
            found += [os.path.relpath(os.path.join(here, d), top) for d in dirs]
            if len(found) >= MAX_SUBGROUPS:  # VE root makes them: a bounded record
                return found[:MAX_SUBGROUPS]
        return found

    def remake_subgroups(self, name, subgroups, owner):
        """Make ``subgroups`` (from ``subgroups``) again in the VE's cgroup2 group, each
        VE root's (host uid/gid ``owner``) as when its systemd made them: a restored
        systemd watches their files (CRIU makes only those that hold processes)."""
        top = self.clone_target(name)
        for rel in subgroups:
            parts = rel.split("/")
            if top is None or not rel or any(p in ("", ".", "..") for p in parts):
                continue
            path = os.path.join(top, rel)
            os.makedirs(path, exist_ok=True)
            # All its files, as when VE root made it (the kernel gives a new group's
            # files to its maker): a restored process reopens some for writing, such
            # as a service's memory.pressure.
            for entry in [path, *(os.path.join(path, f) for f in os.listdir(path))]:
                if not os.path.isdir(entry) or entry == path:
                    os.chown(entry, owner, owner)

    def clone_target(self, name):
        """Return the v2 group directory to fork a VE's first process into, or None.

        A process created there by clone3(CLONE_INTO_CGROUP) never has to be
        moved, which is the fast way into a v2 group.
        """
        return None

    @abc.abstractmethod
    def file_path(self, name, filename):
        """Return the absolute path of the group's cgroup file ``filename`` (e.g.
        ``memory.limit_in_bytes``): in the hierarchy of its controller on v1."""

    @abc.abstractmethod
    def pids(self, name):
        """Return the PIDs (host view) of every process in the group."""

    @abc.abstractmethod
    def kill(self, name):
        """SIGKILL every process in the group (freeze first so none escapes by forking)."""

    @abc.abstractmethod
    def frozen(self, name):
        """Return a context manager keeping the group's processes frozen for its body
        (they cannot run, fork or call the kernel), thawed after."""

    @abc.abstractmethod
    def destroy(self, name, timeout=5.0):
        """Remove the group once its processes are gone; a missing group is fine."""

    @abc.abstractmethod
    def exists(self, name):
        """Tell whether the group exists."""

    @abc.abstractmethod
    def usage(self, name):
        """Return a ``Usage`` for the group."""

    @abc.abstractmethod
    def footprint(self, name):
        """(RAM bytes in use, swap bytes in use, processes) of the group: the few
        reads sysinfo(2) answers need, where ``usage`` reads every counter."""

    @abc.abstractmethod
    def group_of(self, pid):
        """Return the name of the VE group holding host PID ``pid``, or None."""
