"""A VE's private area as a filesystem image on a loop device (OpenVZ ploop style).

The image (``images/<VEID>.img``) is a sparse file of the VE's disk space:
writes inside stop with ENOSPC when it is full, and the host's filesystem
gives the image at most that much. It is mounted at ``private/<VEID>`` while
the VE runs (or is being built); its loop device frees itself at unmount.

Two filesystems, because growing one online needs a capability:

- ext4: the inode limit is the filesystem's inode count, fixed at mkfs (this
  kernel has no CONFIG_QUOTA, so no project quota could limit it live; a
  bigger image adds inodes with its block groups). Resized offline with
  resize2fs both ways; online growth needs CAP_SYS_RESOURCE.
- xfs: inodes are allocated on demand up to a share of the space
  (``imaxpct``), so the limit is rounded up to whole percents; both size and
  that share grow online (CAP_SYS_ADMIN). XFS cannot shrink: a smaller size,
  like an ext4 inode change, rebuilds the image by copying (VE stopped).

``default_fs`` picks ext4 where the engine may grow it online, else xfs.
mkfs, e2fsck, resize2fs and cp run with argument lists; the rest is ioctls.
"""

import contextlib
import errno
import fcntl
import math
import os
import struct
import time
from collections import namedtuple

from ..kernel import caps, libc, loop

EXT4, XFS = "ext4", "xfs"
FILESYSTEMS = (EXT4, XFS)
BLOCK_SIZE = 4096
XFS_INODE_SIZE = 512
MIN_FREE = 16 << 20  # a shrink leaves at least this much free: a filesystem needs room
_XFS_SMALL = 300 << 20  # mkfs.xfs refuses smaller unless told it is for testing
# ext4_super_block: inodes, blocks, reserved blocks, free blocks, free inodes, first data block
_SUPER = struct.Struct("<IIIIII")
_EXT4_MAGIC = 0xEF53  # at offset 56; log2(block size) - 10 at offset 24
EXT4_IOC_RESIZE_FS = 0x40086610
XFS_IOC_FSGROWFSDATA = 0x4010586E  # struct xfs_growfs_data {u64 newblocks; u32 imaxpct;}
CAP_SYS_RESOURCE = 24


class DiskUsage(namedtuple("DiskUsage", "space_used space_total inodes_used inodes_total")):
    """Bytes and inodes used of the VE's disk, and its totals (what ``df`` shows inside)."""


def default_fs():
    """ext4 where this process may grow a mounted ext4 (CAP_SYS_RESOURCE), else xfs."""
    return EXT4 if caps.effective(CAP_SYS_RESOURCE) else XFS


def create(path, fs, size, inodes, mountpoint, owner):
    """Make a new sparse image of ``size`` bytes at ``path`` and mount it at ``mountpoint``.

    The filesystem holds ``inodes`` inodes (rounded up: whole inode blocks
    for ext4, whole percents of the space for xfs) and has an empty root
    owned by uid/gid ``owner``. The caller unmounts and removes ``path`` if a
    later step fails.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    if fs == EXT4:
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-b", str(BLOCK_SIZE), "-N", str(inodes),
              "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", str(path)])
    else:
        # The testing override is mkfs.xfs's own way past its 300 MB floor.
        env = dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1") \
            if size < _XFS_SMALL else None
        _run(["mkfs.xfs", "-q", "-f", "-K", "-b", f"size={BLOCK_SIZE}",
              "-i", f"maxpct={xfs_maxpct(size, inodes)}", str(path)], env=env)
    mount(path, fs, mountpoint)
    lost = os.path.join(mountpoint, "lost+found")
    if os.path.isdir(lost):
        os.rmdir(lost)  # the tree starts empty; e2fsck remakes it when it needs it
    os.chown(mountpoint, owner, owner)
    os.chmod(mountpoint, 0o755)


def xfs_maxpct(size, inodes):
    """The share of space (whole percent) xfs may give to ``inodes`` inodes."""
    return min(100, max(1, math.ceil(inodes * XFS_INODE_SIZE * 100 / size)))


def mount(path, fs, mountpoint, attempts=50):
    """Mount image ``path`` at ``mountpoint`` (if not yet) through a loop device.

    An image still attached to a loop device is mounted from that device:
    its filesystem may still be alive elsewhere (a lazy unmount, or a copy of
    the mount in a VE's mount namespace while that VE starts), and mounting
    the same device again shares that one filesystem instead of opening a
    second, corrupting view of it. A device that frees itself meanwhile is
    retried with a fresh one.
    """
    if is_mounted(mountpoint):
        return
    for _ in range(attempts):
        devices = attached(path)
        if devices:
            try:
                libc.mount(devices[0], str(mountpoint), fs)
            except OSError:
                time.sleep(0.02)  # it was letting go: take a fresh device next time
                continue
            if io_counters(path) is None:
                _save_io_baseline(path, devices[0])
            return
        device, fd = loop.attach(path)
        try:
            _save_io_baseline(path, device, at_attach=True)  # before the mount: ``attached``
            libc.mount(device, str(mountpoint), fs)
            return
        finally:
            os.close(fd)  # autoclear: without the mount the device frees itself now
    raise OSError(errno.EIO, f"{path} stays attached to a loop device that cannot be mounted")


def attached(path):
    """The loop devices holding image ``path`` (one; more only if something else
    attached it).

    The device the image's record names is checked first: ``mount`` writes that
    record between attaching and mounting, so no filesystem of the engine's can
    be on a device it does not name (a crash before the mount frees the device:
    autoclear). Every loop device is looked at only without such a record (an
    image an older engine attached, or one from elsewhere) or if the image is
    open somewhere (attached behind the engine's back): 12 ms with 500 attached,
    measured (bench/loop_lookup.py), which a start and a stop each paid.
    """
    recorded = _recorded_device(path)
    if recorded is not None and loop.is_backed_by(recorded, path):
        return [recorded]
    if recorded is None or _open_elsewhere(path):  # attached behind our back (mount -o loop)?
        return loop.devices_of(path)
    return []


def _open_elsewhere(path):
    """True if anything has the file ``path`` open (a loop device holds its image
    open), or if that cannot be told: a write lease is granted only on a file open
    nowhere else. A few microseconds, where a scan of the loop devices costs ms."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return True
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError:
        return True  # EAGAIN: open elsewhere (or leases are off here)
    finally:
        os.close(fd)


def io_counters(path):
    """(read bytes, write bytes, read ops, write ops) of the image since its loop
    device was attached; None when it is not attached (or the record is lost).

    The loop device's own statistics count every I/O that reaches the VE's
    disk, whatever cgroup did it and with no throttle rule needed; they are
    kept per device across attachments, so the values at attach are the zero.
    """
    try:
        with open(_io_file(path)) as f:
            device, *base = f.read().split()
        base = [int(v) for v in base[:4]]
        if len(base) != 4 or not loop.is_backed_by(device, path):
            return None
        ops_r, bytes_r, ops_w, bytes_w = (now - then
                                          for now, then in zip(loop.io_stat(device), base))
    except (OSError, ValueError):
        return None
    return bytes_r, bytes_w, ops_r, ops_w


def _save_io_baseline(path, device, at_attach=False):
    """Record the device holding the image and its I/O counters now. ``at_attach``:
    written by the engine that attached it, before any mount (``attached`` trusts
    only such a record)."""
    from ..fsutil import atomic_write
    values = " ".join(map(str, loop.io_stat(device)))
    mark = f" {_AT_ATTACH}" if at_attach else ""
    atomic_write(_io_file(path), f"{device} {values}{mark}\n", durable=False)  # a reboot
    # frees every device: a record from before names one that holds nothing of it


_AT_ATTACH = "attached-here"


def _recorded_device(path):
    """The device of the image's record if ``mount`` wrote it at attach; else None."""
    try:
        with open(_io_file(path)) as f:
            fields = f.read(4096).split()
    except OSError:
        return None
    if len(fields) == 6 and fields[5] == _AT_ATTACH and fields[0].startswith("/dev/loop"):
        return fields[0]
    return None


def _io_file(path):
    return f"{path}.io"


BUSY_SECONDS = 1.0  # how long a busy unmount is retried before it is made lazy


def unmount(path, mountpoint):
    """Unmount the VE's image and make sure no loop device keeps it; safe to repeat.

    The usage seen last is kept beside the image (``<image>.usage``), so a
    stopped VE reports what a running one would.
    """
    if is_mounted(mountpoint):
        _save_usage(path, mountpoint)
    unmount_at(mountpoint)
    if os.path.exists(path):
        for device in attached(path):  # an older engine's crash between attach and mount
            loop.detach(device)


def unmount_at(mountpoint):
    """Unmount whatever is mounted at ``mountpoint`` (an image, a VE's root view)."""
    # Processes killed just before (a stop, a checkpoint) may still be letting go.
    patience = time.monotonic() + BUSY_SECONDS
    while is_mounted(mountpoint):
        try:
            libc.umount2(str(mountpoint))
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            if time.monotonic() < patience:
                time.sleep(0.01)
                continue
            libc.umount2(str(mountpoint), libc.MNT_DETACH)  # a straggler holds it: let go


def wait_released(path, timeout):
    """Wait until no loop device holds image ``path`` (a lazily unmounted filesystem
    lives on, and writes to it, until its last user lets go); OSError(EBUSY) after
    ``timeout`` seconds. Before the image is copied for good, or mounted again."""
    deadline = time.monotonic() + timeout
    while attached(path):
        if time.monotonic() > deadline:
            raise OSError(errno.EBUSY, f"{path} is still in use {timeout:.0f} s after its "
                                       "unmount (a process holds its filesystem)")
        time.sleep(0.01)


def is_mounted(mountpoint):
    """True if a filesystem is mounted at ``mountpoint``.

    Two stats (the image is its own filesystem, so its root has another
    device than the directory above), not a read of the whole mount table:
    usage sampling asks this for every VE.
    """
    try:
        return os.path.ismount(mountpoint) and not os.path.islink(mountpoint)
    except OSError:
        return False


def usage(path, mountpoint, fs=None):
    """DiskUsage of the VE.

    Cheap either way: one statfs of the mounted filesystem, else the figures
    saved at the last unmount, else (ext4) one 1 KiB read of the superblock,
    whose totals include ext4's own metadata. Only given ``fs`` (the caller
    holds the VE's lock and it is stopped) may a last resort mount the image
    aside to look.
    """
    if is_mounted(mountpoint):
        return _statfs_usage(mountpoint)
    try:
        with open(_usage_file(path)) as f:
            return DiskUsage(*map(int, f.read().split()))
    except (OSError, ValueError, TypeError):
        pass
    with open(path, "rb") as f:
        f.seek(1024)
        raw = f.read(1024)
    if len(raw) < 1024 or struct.unpack_from("<H", raw, 56)[0] != _EXT4_MAGIC:
        if fs is None:
            raise OSError(errno.ENODATA, f"no usage recorded for {path} yet")
        with _mounted_aside(path, fs) as where:
            return _statfs_usage(where)
    inodes, blocks, _, free_blocks, free_inodes, _ = _SUPER.unpack_from(raw, 0)
    block = 1024 << struct.unpack_from("<I", raw, 24)[0]
    return DiskUsage((blocks - free_blocks) * block, blocks * block,
                     inodes - free_inodes, inodes)


def remove(path):
    """Delete an unmounted image, its saved usage and what a crashed resize left."""
    path = str(path)
    for image in (f"{path}.new", path):
        aside = f"{image}.mnt"
        if os.path.isdir(aside):
            unmount(image, aside)
            os.rmdir(aside)
        elif os.path.exists(image):
            unmount(image, aside)  # only detaches loop devices
        for name in (image, _usage_file(image), _io_file(image)):
            if os.path.exists(name):
                os.unlink(name)


def resize(path, fs, mountpoint, size, inodes, old_inodes, owner):
    """Give the image ``size`` bytes and room for ``inodes`` inodes.

    Mounted (the VE runs): grow only, and for ext4 keep the inode count.
    Unmounted: anything; what the filesystem cannot do in place (shrink xfs,
    change ext4's inode count) rebuilds the image by copying.
    """
    current = os.stat(path).st_size
    if is_mounted(mountpoint):
        if size < current:
            raise OSError(errno.EBUSY, "stop the VE to shrink its disk")
        if fs == EXT4 and inodes != old_inodes:
            raise OSError(errno.EBUSY, "stop the VE to change its inode limit (ext4 images "
                                       "are rebuilt for it)")
        _grow_mounted(path, fs, mountpoint, size, inodes)
    elif fs == EXT4 and inodes == old_inodes:
        _run(["e2fsck", "-f", "-p", str(path)], ok=(0, 1))
        if size > current:
            os.truncate(path, size)
        _run(["resize2fs", str(path), f"{size // 1024}K"])
        os.truncate(path, size)
        with _mounted_aside(path, fs):
            pass  # records the new usage at unmount
    elif fs == XFS and size >= current:
        with _mounted_aside(path, fs) as where:
            _grow_mounted(path, fs, where, size, inodes)
    else:
        _rebuild(path, fs, size, inodes, owner)


def _grow_mounted(path, fs, mountpoint, size, inodes):
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        old_size = os.fstat(fd).st_size
        os.ftruncate(fd, max(size, old_size))
    finally:
        os.close(fd)
    root = None
    try:
        for device in attached(path):
            loop.refresh_capacity(device)
        root = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if fs == EXT4:
            fcntl.ioctl(root, EXT4_IOC_RESIZE_FS, struct.pack("=Q", size // BLOCK_SIZE))
        else:
            fcntl.ioctl(root, XFS_IOC_FSGROWFSDATA, struct.pack(
                "=QI4x", size // BLOCK_SIZE, xfs_maxpct(size, inodes)))
    except OSError as exc:
        # Refused outright (EPERM, or before the ioctl): the filesystem never
        # used the new tail. After a partial grow the file must stay as long.
        if exc.errno == errno.EPERM or root is None:
            os.truncate(path, old_size)
        if exc.errno == errno.EPERM and fs == EXT4:
            raise OSError(errno.EBUSY, "growing a mounted ext4 needs CAP_SYS_RESOURCE, which "
                          "this host's capability bounding set lacks; it grows at the VE's "
                          "next stop or start (or make its image xfs)") from None
        raise
    finally:
        if root is not None:
            os.close(root)


def _rebuild(path, fs, size, inodes, owner):
    """Copy the unmounted image's tree into a new image of the new shape, then swap."""
    new = f"{path}.new"
    remove(new)
    with _mounted_aside(path, fs) as old_root:
        used = _statfs_usage(old_root).space_used
        if size < used + MIN_FREE:
            raise OSError(errno.ENOSPC, f"the VE uses {used >> 20} MiB: too much for "
                                        f"{size >> 20} MiB")
        target = _aside(new)
        try:
            create(new, fs, size, inodes, target, owner)
            _run(["cp", "-a", "--sparse=always", "--one-file-system", "--",
                  f"{old_root}/.", f"{target}/"])
            unmount(new, target)
            os.rmdir(target)
        except BaseException:
            with contextlib.suppress(OSError):
                remove(new)  # unmounts and removes the half-made image and its mount point
            raise
    os.replace(new, path)
    os.replace(_usage_file(new), _usage_file(path))


class _mounted_aside:
    """Mount an image at a private temporary directory beside it, for a step."""

    def __init__(self, path, fs):
        self.path, self.fs = path, fs

    def __enter__(self):
        self.where = _aside(self.path)
        try:
            mount(self.path, self.fs, self.where)
        except BaseException:
            os.rmdir(self.where)
            raise
        return self.where

    def __exit__(self, *exc):
        unmount(self.path, self.where)
        os.rmdir(self.where)


def _aside(path):
    where = f"{path}.mnt"
    if is_mounted(where):
        libc.umount2(where, libc.MNT_DETACH)  # left by a crash
    os.makedirs(where, mode=0o700, exist_ok=True)
    return where


def _statfs_usage(mountpoint):
    st = os.statvfs(mountpoint)
    return DiskUsage((st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize,
                     st.f_files - st.f_ffree, st.f_files)


def _usage_file(path):
    return f"{path}.usage"


def _save_usage(path, mountpoint):
    from ..fsutil import atomic_write
    atomic_write(_usage_file(path), " ".join(map(str, _statfs_usage(mountpoint))) + "\n",
                 durable=False)  # a hint: the superblock stands in if it is lost


def _run(argv, ok=(0,), env=None):
    import subprocess  # on use: a start or stop (mount, unmount) runs no tool
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=3600, env=env)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, f"{argv[0]} is missing (Debian packages e2fsprogs, "
                                    "xfsprogs)") from None
    if out.returncode not in ok:
        raise OSError(errno.EIO, f"{argv[0]} failed: {(out.stderr or out.stdout).strip()}")
    return out
