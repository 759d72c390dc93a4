"""What a node offers: physical size, cgroup version and what the kernel lacks.

The dashboard's node worker reports these in its heartbeat; staff see the
warnings on the node's page.
"""

import os

from . import cgroups
from .cgroups.fs import cgroup_mounts
from .errors import Unsupported

CAP_SYS_RESOURCE = 24


def memory_bytes(meminfo="/proc/meminfo"):
    """Physical RAM in bytes."""
    with open(meminfo) as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _bounding_set():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return 0


def facts(ve_root):
    """Return {ram_bytes, cpus, disk_bytes, disk_free_bytes, cgroup_version, warnings}."""
    warnings = []
    try:
        version = cgroups.detect()
    except Unsupported as exc:
        version, warnings = None, [str(exc)]
    mounts = cgroup_mounts()
    if version == 1:
        missing = [c for c in ("memory", "cpu", "cpuset", "pids") if c not in mounts["v1"]]
        if missing:
            warnings.append("cgroup v1 controllers not mounted: " + ", ".join(missing))
        memory = mounts["v1"].get("memory")
        if memory and not os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes")):
            warnings.append("no swap accounting (memory.memsw): swap limits are not enforced")
        warnings.append("cgroup v1 host: production nodes should run cgroup v2")
        blkio = mounts["v1"].get("blkio")
        if blkio and not os.path.exists(os.path.join(blkio, "blkio.bfq.weight")):
            warnings.append("no BFQ group scheduling: plans' disk I/O weights are not "
                            "enforced on this node (caps are)")
    if not _bounding_set() >> CAP_SYS_RESOURCE & 1:
        warnings.append("CAP_SYS_RESOURCE is not in the bounding set: a mounted ext4 cannot "
                        "grow, so new VEs get xfs disk images")
    import shutil  # here: only the heartbeat needs it
    if shutil.which("lxcfs") is None:
        warnings.append("lxcfs is not installed: VEs see the host's /proc figures")
    from . import watch
    from .paths import Layout
    if os.environ.get("VE_WATCH") != "off":
        warnings += _watcher_warnings(watch, Layout(ve_root))
    try:
        st = os.statvfs(ve_root if os.path.exists(ve_root) else "/")
        disk, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    except OSError:
        disk = free = 0
    return {"ram_bytes": memory_bytes(), "cpus": os.cpu_count() or 1, "disk_bytes": disk,
            "disk_free_bytes": free, "cgroup_version": version, "warnings": warnings}


def _watcher_warnings(watch, layout):
    try:
        deaf = watch.request(layout, {"op": "status"}, timeout=2.0).get("deaf", [])
    except (OSError, ValueError):
        return ["no node watcher runs (vectl watch): VEs that reboot from inside stay down "
                "until reconcile starts them, and see the host's sysinfo"]
    if not deaf:
        return []
    return ["VEs that lost their notifier (the watcher and its twin were killed at once; "
            "their sysinfo and reboot fail until they are restarted): "
            + ", ".join(map(str, deaf))]
