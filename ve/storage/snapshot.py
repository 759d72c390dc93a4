"""A VE's disk image copied at one moment: reflinked where the host filesystem can.

On a host filesystem with reflinks (XFS with reflink=1, btrfs) a copy of an
image shares every block with it (FICLONE, milliseconds whatever the size) and
costs space only for what changes afterwards. Elsewhere (ext4) it is a full
copy of the blocks that hold data (holes stay holes), said so by its method.

``frozen_filesystem`` holds a mounted image's filesystem still (FIFREEZE: its
dirty data and journal written into the image, writers wait) so that the copy
is what a clean unmount would have left.
"""

import contextlib
import errno
import fcntl
import os
import struct

REFLINK, COPY = "reflink", "copy"
FICLONE = 0x40049409
FIFREEZE, FITHAW = 0xC0045877, 0xC0045878
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST, FIEMAP_EXTENT_SHARED = 0x1, 0x2000
_FIEMAP = struct.Struct("=QQIIII")            # start, length, flags, mapped, count, reserved
_EXTENT = struct.Struct("=QQQQQI12x")          # logical, physical, length, 2 reserved, flags
_EXTENTS_PER_CALL = 512
_COPY_CHUNK = 8 << 20
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8


def reflink(source, target):
    """Make ``target`` (new, mode 0600) share every block of ``source``; False (nothing
    made) where the host filesystem cannot, then ``copy`` is the way."""
    try:
        _into_new(source, target, lambda src, dst: fcntl.ioctl(dst, FICLONE, src))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
            return False
        raise
    return True


def copy(source, target):
    """Make ``target`` (new, mode 0600) a full copy of ``source``'s data (holes stay)."""
    _into_new(source, target, _copy_data)


def clone(source, target):
    """``reflink``, else ``copy``; return the method used (REFLINK or COPY)."""
    if reflink(source, target):
        return REFLINK
    copy(source, target)
    return COPY


def _into_new(source, target, fill):
    """Create ``target``, ``fill(source_fd, target_fd)`` it and make it durable; on
    failure it is removed again."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600)
        try:
            fill(src, dst)
            os.fsync(dst)
        except BaseException:
            os.close(dst)
            os.unlink(target)
            raise
        os.close(dst)
    finally:
        os.close(src)


def _copy_data(src, dst):
    """Copy the parts of ``src`` that hold data; holes stay holes."""
    from ..fsutil import data_ranges
    size = os.fstat(src).st_size
    os.ftruncate(dst, size)
    for offset, end in data_ranges(src, size):
        while offset < end:
            done = os.copy_file_range(src, dst, min(_COPY_CHUNK, end - offset), offset, offset)
            if done == 0:
                raise OSError(errno.EIO, "the image shrank while it was copied")
            offset += done


def exclusive_bytes(path):
    """Bytes of ``path``'s data that no other file shares (what deleting it frees)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        total, start = 0, 0
        while True:
            extents = _fiemap(fd, start)
            if not extents:
                return total
            for logical, length, flags in extents:
                if not flags & FIEMAP_EXTENT_SHARED:
                    total += length
                if flags & FIEMAP_EXTENT_LAST:
                    return total
            start = extents[-1][0] + extents[-1][1]
    finally:
        os.close(fd)


def _fiemap(fd, start):
    """The next extents of ``fd`` from byte ``start``: [(logical, length, flags)]."""
    request = bytearray(_FIEMAP.size + _EXTENT.size * _EXTENTS_PER_CALL)
    _FIEMAP.pack_into(request, 0, start, 2**64 - 1 - start, FIEMAP_FLAG_SYNC, 0,
                      _EXTENTS_PER_CALL, 0)
    fcntl.ioctl(fd, FS_IOC_FIEMAP, request)
    mapped = _FIEMAP.unpack_from(request, 0)[3]
    extents = []
    for i in range(mapped):
        logical, _, length, _, _, flags = _EXTENT.unpack_from(
            request, _FIEMAP.size + i * _EXTENT.size)
        extents.append((logical, length, flags))
    return extents


@contextlib.contextmanager
def frozen_filesystem(mountpoint):
    """Keep the filesystem mounted at ``mountpoint`` frozen (consistent in its image,
    writers waiting) for the body; thawed after, whatever happens."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
        try:
            yield
        finally:
            fcntl.ioctl(fd, FITHAW, 0)
    finally:
        os.close(fd)


@contextlib.contextmanager
def mounted_readonly(image, fs, where):
    """Mount a copy of a VE's image read-only at ``where`` for the body (no journal
    replay, and for XFS ``nouuid``: the VE's own disk, the same filesystem, may be
    mounted at the same time); unmounted after, its loop device freed."""
    from ..kernel import libc, loop
    device, fd = loop.attach(image)
    try:
        libc.mount(device, str(where), fs, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   "nouuid,norecovery" if fs == "xfs" else "noload")
    finally:
        os.close(fd)  # autoclear: the mount holds the device from here
    try:
        yield where
    finally:
        libc.umount2(str(where))
