"""Per-VE cgroups: pick the driver for this host's cgroup version.

``driver()`` is the entry point; the engine only sees the ``CgroupDriver``
interface (``base.py``). ``VE_CGROUP=v1|v2`` in the environment overrides the
detection, e.g. to exercise the v2 driver on a hybrid host.
"""

import os

from ..errors import InvalidConfig, Unsupported
from .base import CgroupDriver, Usage
from .fs import CgroupFS, cgroup_mounts
from .v1 import CgroupV1Driver
from .v2 import CgroupV2Driver

__all__ = ["CgroupDriver", "CgroupV1Driver", "CgroupV2Driver", "Usage", "detect", "driver"]

SYSFS = "/sys/fs/cgroup"


def _version(value):
    text = str(value).strip().lower().removeprefix("v")
    if text not in ("1", "2"):
        raise InvalidConfig(f"bad cgroup version {value!r}: use v1 or v2")
    return int(text)


def detect(root=SYSFS, mountinfo=None):
    """Return the cgroup version (1 or 2) the engine should use on this host.

    ``VE_CGROUP`` wins; then pure v2 (``<root>/cgroup.controllers`` exists);
    then v1 if a memory hierarchy is mounted. ``mountinfo`` is text to parse
    instead of ``/proc/self/mountinfo`` (for tests).
    """
    forced = os.environ.get("VE_CGROUP")
    if forced:
        return _version(forced)
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return 2
    if "memory" in cgroup_mounts(mountinfo)["v1"]:
        return 1
    raise Unsupported("no usable cgroups: neither a cgroup2 root nor a v1 memory hierarchy")


def driver(parent="ve", version=None, root=None, **options):
    """Return the ``CgroupDriver`` for ``version`` (detected when None).

    ``root`` is the cgroup2 mount (default: /sys/fs/cgroup if it is one, else
    the first cgroup2 mount) or, for v1, a directory whose subdirectories are
    the hierarchies named by their controllers (``memory``, ``cpu,cpuacct``);
    by default v1 hierarchies come from /proc/self/mountinfo. ``options`` go to
    the driver (``require_controllers``).
    """
    version = detect() if version is None else _version(version)
    if version == 2:
        return CgroupV2Driver(CgroupFS(root or v2_root()), parent, **options)
    if root is None:
        mounts = cgroup_mounts()
        unified = mounts["v2"][0] if mounts["v2"] else None
        return CgroupV1Driver(CgroupFS("/"), parent, mounts["v1"], unified=unified, **options)
    return CgroupV1Driver(CgroupFS(root), parent, _dir_mounts(root), **options)


def v2_root(mountinfo=None):
    """Return the cgroup2 mount point to use (the first one on a hybrid host)."""
    if os.path.exists(os.path.join(SYSFS, "cgroup.controllers")):
        return SYSFS
    mounts = cgroup_mounts(mountinfo)["v2"]
    if not mounts:
        raise Unsupported("no cgroup2 filesystem is mounted")
    return mounts[0]


def _dir_mounts(root):
    names = [n for n in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, n))]
    return {controller: name for name in names for controller in name.split(",")}
