"""LXCFS files over a VE's /proc: bound at start, re-bound or removed while it runs.

One lxcfs per node serves ``<dir>/proc/{meminfo,cpuinfo,stat,...}`` and
``<dir>/sys/devices/system/cpu`` with the figures of whichever container
reads them (lxcfs goes by the cgroups of the reader's PID-namespace init).
A VE sees them where the kernel's files were: each is bound over the VE's
own, as LXC does.

- At start (``start_binds``) the VE's init binds them in its new mount
  namespace before pivot_root, while host paths are still reachable (the
  FUSE mount allows other users; every directory above it must be
  world-traversable, ``serving`` checks that).
- A running VE's binds die with the lxcfs that served them ("Transport
  endpoint is not connected"). ``rebind`` replaces them with binds of a new
  lxcfs from outside: a forked helper clones each file's mount in the host
  namespace (open_tree), joins the VE's mount namespace and moves the clones
  over the dead binds (move_mount). ``unbind`` only removes them: the VE
  sees the kernel's files again (the host's figures, but readable).
- ``bound_state`` tells current from stale binds without touching the FUSE
  mount (a hung lxcfs would hang the caller): by device number, from
  mountinfo.
"""

import ctypes
import errno
import os
import stat
from collections import Counter

from . import helper, libc

DEFAULT_DIR = "/var/lib/lxcfs"
PROC_FILES = ("cpuinfo", "diskstats", "loadavg", "meminfo", "slabinfo", "stat", "swaps",
              "uptime")
CPU_DIR = "sys/devices/system/cpu"
FSTYPE = b"fuse.lxcfs"
TARGETS = tuple(f"/proc/{name}" for name in PROC_FILES) + (f"/{CPU_DIR}",)

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT = 428, 429  # the same number on every architecture
_OPEN_TREE_CLONE, _MOVE_MOUNT_F_EMPTY_PATH, _UMOUNT_NOFOLLOW = 1, 4, 8
_AT_FDCWD = -100
_HELPER_TIMEOUT = 5.0
MOUNTINFO_LIMIT = 1 << 20


def serving(lxcfs_dir):
    """``lxcfs_dir`` if a live lxcfs serves it and VE root can reach it, else None.

    Cheap enough for every start: one mountinfo scan and one read through
    the FUSE mount (which would wait on an lxcfs that hangs; the node
    watcher kills a hung one within seconds, ``responds``).
    """
    if not traversable(lxcfs_dir) or mounted_device(lxcfs_dir) is None:
        return None
    try:
        with open(os.path.join(lxcfs_dir, "proc", "uptime"), "rb") as handle:
            handle.read(64)
    except OSError:
        return None
    return lxcfs_dir


def traversable(lxcfs_dir):
    """True if every directory above ``lxcfs_dir`` lets others through (VE root is one)."""
    path = os.path.dirname(host_path(lxcfs_dir))
    while True:
        try:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def mounted_device(lxcfs_dir):
    """The device ("major:minor") of the lxcfs mounted at ``lxcfs_dir``, or None."""
    target = os.fsencode(host_path(lxcfs_dir))
    found = [dev for point, dev in _lxcfs_mounts("self") if point == target]
    return found[-1] if found else None  # the last one is on top


def host_path(lxcfs_dir):
    """``lxcfs_dir`` made absolute without a stat of itself (a hung lxcfs would not answer)."""
    path = os.path.abspath(lxcfs_dir)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def responds(lxcfs_dir, timeout=2.0):
    """True if ``lxcfs_dir``/proc/uptime can be read within ``timeout`` seconds.

    Read in a forked helper: a read from a hung lxcfs waits until the FUSE
    connection is aborted, and only the helper waits (it is killed).
    """
    try:
        return helper.run(_read_uptime, (lxcfs_dir,), timeout=timeout) == "ok"
    except OSError:
        return False


def start_binds(lxcfs_dir):
    """(source, target) of every bind a starting VE's init makes over its /proc files,
    targets relative to its root. It makes them all or none (``spawn_init.c``): if a
    bind fails (the lxcfs died a moment ago, say), the VE keeps the kernel's files."""
    return _pairs(lxcfs_dir, ".")


def bound_state(init_pid, lxcfs_dir, device=None):
    """Tell how the VE of ``init_pid`` sees lxcfs: "current", "stale" or "absent".

    "current": every lxcfs bind in its /proc comes from the lxcfs mounted at
    ``lxcfs_dir`` now (whether that one is healthy is ``responds``'s
    question); "stale": some come from an lxcfs no longer mounted there (or
    none is); "absent": none (started without lxcfs, or unbound).
    ``device``: ``mounted_device(lxcfs_dir)`` if the caller has it (one
    look at the host's mounts for many VEs). Raises OSError if the VE's
    init is gone.
    """
    bound = _bound_devices(init_pid)
    if not bound:
        return "absent"
    current = device or mounted_device(lxcfs_dir)
    return "current" if current and set(bound.values()) == {current} else "stale"


def rebind(init_pid, lxcfs_dir, timeout=_HELPER_TIMEOUT):
    """Replace the lxcfs binds in the running VE of ``init_pid`` with ``lxcfs_dir``'s.

    Binds the files a VE started without lxcfs lacks, too. Returns
    {"done": [targets], "failed": {target: reason}}; raises OSError if
    ``init_pid`` is not a VE's init (any more), or the helper cannot enter
    the VE or does not finish within ``timeout``.
    """
    pidfd = _open_init(init_pid)
    try:
        stacked = _stacked(init_pid)  # read once the pidfd pins the process
        return helper.run(_rebind_inside, (pidfd, lxcfs_dir, stacked), keep=(pidfd,),
                          timeout=timeout)
    finally:
        os.close(pidfd)


def unbind(init_pid, timeout=_HELPER_TIMEOUT):
    """Remove every lxcfs bind in the VE of ``init_pid``: it sees the kernel's files.

    Returns {"done": [targets], "failed": {target: reason}} like ``rebind``.
    """
    return rebind(init_pid, None, timeout)


def _open_init(init_pid):
    """A pidfd of ``init_pid``, once it is PID 1 of its own PID and mount namespaces.

    A PID reused by a host process must never get binds in the host's /proc.
    """
    pidfd = os.pidfd_open(init_pid)
    try:
        with open(f"/proc/{init_pid}/status", "rb") as handle:
            nspid = next((line.split()[1:] for line in handle if line.startswith(b"NSpid:")), [])
        own_mounts = os.stat(f"/proc/{init_pid}/ns/mnt").st_ino != \
            os.stat("/proc/self/ns/mnt").st_ino
        if len(nspid) < 2 or nspid[-1] != b"1" or not own_mounts:
            raise OSError(errno.ESRCH, f"process {init_pid} is not a VE's init")
    except BaseException:
        os.close(pidfd)
        raise
    return pidfd


# -- mountinfo ----------------------------------------------------------------


def _lxcfs_mounts(pid, limit=-1):
    """[(mount point, device)] of the lxcfs mounts ``pid`` sees, in mount order.

    ``limit``: read about so many bytes at most (a VE decides how many
    mounts it has; the binds made at start come first).
    """
    found = []
    with open(f"/proc/{pid}/mountinfo", "rb") as handle:
        for line in handle.readlines(limit):
            fields, _, tail = line.partition(b" - ")
            if tail.split(b" ", 1)[0] == FSTYPE:
                parts = fields.split(b" ")
                found.append((parts[4].replace(b"\\040", b" "), parts[2].decode()))
    return found


def _ve_binds(init_pid):
    """[(target, device)] of the lxcfs binds in the VE of ``init_pid``, in mount order."""
    targets = {os.fsencode(t) for t in TARGETS}
    return [(point.decode(), dev) for point, dev in _lxcfs_mounts(init_pid, MOUNTINFO_LIMIT)
            if point in targets]


def _bound_devices(init_pid):
    """{target: device of the topmost lxcfs bind on it} in the VE of ``init_pid``."""
    return dict(_ve_binds(init_pid))


def _stacked(init_pid):
    """{target: how many lxcfs binds are stacked on it} in the VE of ``init_pid``."""
    return dict(Counter(target for target, _ in _ve_binds(init_pid)))


# -- the forked helper ----------------------------------------------------------


def _pairs(lxcfs_dir, root):
    """(source, target) of every bind: the /proc files, then the CPU directory."""
    pairs = [(os.path.join(lxcfs_dir, "proc", name), os.path.join(root, "proc", name))
             for name in PROC_FILES]
    # As LXC: the whole directory, where this lxcfs serves all of it.
    if os.path.exists(os.path.join(lxcfs_dir, CPU_DIR, "uevent")):
        pairs.append((os.path.join(lxcfs_dir, CPU_DIR), os.path.join(root, CPU_DIR)))
    return pairs


def _read_uptime(lxcfs_dir):
    with open(os.path.join(lxcfs_dir, "proc", "uptime"), "rb") as handle:
        handle.read(64)
    return "ok"


def _rebind_inside(pidfd, lxcfs_dir, stacked):
    """Helper body: clone the new binds here, then swap them in inside the VE."""
    clones = {}
    if lxcfs_dir:
        for source, target in _pairs(lxcfs_dir, "/"):
            try:
                clones[target] = _open_tree(source)
            except FileNotFoundError:
                continue
    libc.setns(pidfd, libc.CLONE_NEWNS)  # host root may: it owns the VE's user namespace
    done, failed = [], {}
    for target in sorted(set(stacked) | set(clones)):
        try:
            for _ in range(stacked.get(target, 0)):
                _umount_nofollow(target)
            if target in clones:
                _move_mount(clones[target], target)
            done.append(target)
        except OSError as exc:
            failed[target] = exc.strerror or str(exc)
    return {"done": done, "failed": failed}


def _open_tree(path):
    fd = _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(_AT_FDCWD),
                       os.fsencode(path), ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree {path}: {os.strerror(err)}", path)
    return fd


def _move_mount(fd, target):
    result = _libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(fd), b"",
                           ctypes.c_int(_AT_FDCWD), os.fsencode(target),
                           ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH))
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"move_mount {target}: {os.strerror(err)}", target)


def _umount_nofollow(target):
    # A VE may have put a symlink where its /proc file was: never follow it.
    libc.umount2(target, libc.MNT_DETACH | _UMOUNT_NOFOLLOW)
