"""Build a VE's mount tree inside its fresh mount namespace, then pivot into it.

Runs in the VE's init (PID 1 of the new PID namespace) before it execs, as
root of the VE's user namespace. Every mount lives only in the VE's mount
namespace: when the VE's last process exits, the kernel drops them all, so the
host's mount table never changes.
"""

import os

from .libc import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID,
                   MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, mount, pivot_root,
                   umount2)

_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_ST_RELATIME = 4096

# Host device nodes a VE gets (bind-mounted: a user namespace cannot mknod).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
             "ptmx": "pts/ptmx", "core": "/proc/kcore"}

# In /dev when /dev/console is a terminal (not /dev/null): a getty may run there.
CONSOLE_MARK = ".console-tty"

# Paths that leak host information or control: hidden (masked) or read-only,
# the same lists runc and crun use.
MASKED = ("proc/acpi", "proc/kcore", "proc/keys", "proc/latency_stats",
          "proc/timer_list", "proc/timer_stats", "proc/sched_debug",
          "proc/scsi", "sys/firmware", "sys/devices/virtual/powercap",
          "sys/kernel/vmcoreinfo")
READ_ONLY = ("proc/asound", "proc/bus", "proc/fs", "proc/irq", "proc/sys",
             "proc/sysrq-trigger")

_NOSUID_NODEV_NOEXEC = MS_NOSUID | MS_NODEV | MS_NOEXEC


def bind_root(private, mountpoint, nodev=True):
    """Bind ``private`` at ``mountpoint`` and make it the working directory.

    Runs as host root in a private mount namespace, before the user
    namespace exists: VE root could not even traverse VE_ROOT (mode 0700).
    The working directory follows into the VE's own copy of the namespace,
    so the remaining steps use paths relative to it.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount(private, mountpoint, None, MS_BIND | MS_REC)
    if nodev:
        # Device nodes in the private area must never work: only /dev's do.
        _remount_bind(mountpoint, MS_NODEV)
    os.chdir(mountpoint)


def finish_root(mount_name, lxcfs=None, cgroup2=False, console=None):
    """Mount /proc, /sys and /dev under the working directory and pivot into it.

    Runs as PID 1 of the VE's PID namespace (so /proc shows the VE's
    processes). ``mount_name`` is the last component of the mount point;
    ``lxcfs``: the host directory an lxcfs serves, whose files cover the
    VE's /proc ones (``lxcfs_mounts``); ``cgroup2``: mount the VE's own
    cgroup2 tree (its cgroup namespace's root) at /sys/fs/cgroup, for an
    init such as systemd that manages cgroups of its own.
    """
    _unlock_root(mount_name)
    _mount_proc_sys()
    if cgroup2:
        _mount_cgroup2()
    if lxcfs:
        from . import lxcfs_mounts
        lxcfs_mounts.bind_at_start(lxcfs, ".")
    _mount_dev("dev", console)
    _mask()
    _bind_boot_id()
    _pivot()


def _mount_cgroup2():
    """The VE's cgroup2 tree (delegated to VE root by the engine) at sys/fs/cgroup."""
    mount("cgroup2", "sys/fs/cgroup", "cgroup2", _NOSUID_NODEV_NOEXEC)


def _unlock_root(mount_name):
    """Stack an unlocked bind of the root on itself and step onto it.

    The bind made by host root arrives locked in the VE's namespace, and
    pivot_root refuses a locked new root. ``..`` is VE_ROOT/root (mode 0755),
    so stepping out and back in lands on the new, topmost mount.
    """
    mount(".", ".", None, MS_BIND)
    os.chdir("..")
    os.chdir(mount_name)


def _remount_bind(path, extra):
    """Remount a bind mount keeping the flags the kernel locks in a user namespace."""
    st_flags = os.statvfs(path).f_flag
    keep = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | _MS_NOATIME | _MS_NODIRATIME
    flags = (st_flags & keep) | (_MS_RELATIME if st_flags & _ST_RELATIME else 0)
    mount(None, path, None, MS_REMOUNT | MS_BIND | flags | extra)


def _mount_proc_sys():
    mount("proc", "proc", "proc", _NOSUID_NODEV_NOEXEC)
    mount("sysfs", "sys", "sysfs", _NOSUID_NODEV_NOEXEC | MS_RDONLY)


def _mount_dev(dev, console=None):
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
    for name in DEVICES + ("console",):
        target = os.path.join(dev, name)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o666))
        # Without a console terminal, writes to /dev/console go nowhere.
        source = (console or "/dev/null") if name == "console" else f"/dev/{name}"
        mount(source, target, None, MS_BIND)
    if console:  # what an init's units can test for (systemd's console-getty does)
        os.close(os.open(os.path.join(dev, CONSOLE_MARK), os.O_CREAT | os.O_WRONLY, 0o444))
    for name, target in DEV_LINKS.items():
        os.symlink(target, os.path.join(dev, name))
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(os.path.join(dev, name), 0o755)
    mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620,gid=5")
    mount("shm", os.path.join(dev, "shm"), "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k")
    mount("mqueue", os.path.join(dev, "mqueue"), "mqueue", _NOSUID_NODEV_NOEXEC)


def _mask():
    null = "dev/null"
    for path in MASKED:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", _NOSUID_NODEV_NOEXEC | MS_RDONLY, "size=0")
        elif os.path.exists(path):
            mount(null, path, None, MS_BIND)
    for path in READ_ONLY:
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _NOSUID_NODEV_NOEXEC)


def _bind_boot_id():
    """A boot id of this VE's own over /proc/sys/kernel/random/boot_id, new at every
    start: journald and `journalctl -b` tell the VE's boots apart (as nspawn does)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # a random (version 4) UUID
    raw[8] = raw[8] & 0x3F | 0x80
    text = raw.hex()
    source = "dev/.boot_id"
    fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(fd, f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}\n"
                 .encode())
    finally:
        os.close(fd)
    target = "proc/sys/kernel/random/boot_id"
    mount(source, target, None, MS_BIND)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _NOSUID_NODEV_NOEXEC)
    os.unlink(source)  # the bind keeps the file; /dev shows no trace of it


def _pivot():
    # pivot_root(".", ".") stacks the old root under the new one; detaching
    # it leaves the VE no path back to the host's tree.
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")
