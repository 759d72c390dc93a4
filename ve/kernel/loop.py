"""Loop devices through their ioctls (no losetup).

A VE's image is attached with autoclear: the kernel frees the loop device
by itself once the filesystem on it is unmounted everywhere, so a stop or
a crash cannot leave one behind while nothing uses it.
"""

import errno
import fcntl
import os
import struct

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_CLR_FD = 0x4C01
LOOP_SET_CAPACITY = 0x4C07
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16  # no second copy of the VE's data in the page cache
SECTOR_SIZE = 512
# struct loop_config: fd, block_size, loop_info64 (232 bytes), 8 reserved u64.
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")
_LOOP_CONFIG_SIZE = 8 + _LOOP_INFO64.size + 64


def attach(image, attempts=20):
    """Attach the file ``image`` to a free loop device; return (path, open fd).

    The device frees itself (autoclear) when the last user lets go of it, so
    the caller mounts it before closing the fd.
    """
    fd_image = os.open(image, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        with open("/dev/loop-control", "rb", buffering=0) as control:
            for _ in range(attempts):  # another process may take the free device first
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                path = f"/dev/loop{number}"
                dev_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                try:
                    _configure(dev_fd, fd_image, LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO)
                except OSError as exc:
                    os.close(dev_fd)
                    if exc.errno == errno.EBUSY:
                        continue
                    raise
                return path, dev_fd
        raise OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(fd_image)


def _configure(dev_fd, image_fd, flags):
    info = _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, b"", b"", b"", 0, 0)
    # 512-byte sectors, whatever the backing file's direct I/O alignment: a reflinked
    # image on XFS asks for 4096, and an image's filesystem made with 512-byte
    # sectors would not mount on such a device (the kernel then goes buffered).
    config = struct.pack("=II", image_fd, SECTOR_SIZE) + info + bytes(64)
    assert len(config) == _LOOP_CONFIG_SIZE
    try:
        fcntl.ioctl(dev_fd, LOOP_CONFIGURE, config)
    except OSError as exc:
        if exc.errno != errno.EINVAL or not flags & LO_FLAGS_DIRECT_IO:
            raise
        # The backing filesystem cannot do direct I/O (tmpfs): go buffered.
        _configure(dev_fd, image_fd, flags & ~LO_FLAGS_DIRECT_IO)


def refresh_capacity(device):
    """Make the loop device ``device`` see its backing file's new size."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
    finally:
        os.close(fd)


def devices_of(image):
    """Loop devices whose backing file is ``image`` (compared by inode)."""
    want = os.stat(image)
    found = []
    for name in _loop_names():
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = os.stat(f.read().rstrip("\n"))
        except OSError:
            continue  # not attached, or its file is gone
        if (backing.st_dev, backing.st_ino) == (want.st_dev, want.st_ino):
            found.append(f"/dev/{name}")
    return found


def io_stat(device):
    """(read ops, read bytes, write ops, write bytes) the loop device ``device`` did
    since it was made: the kernel's block statistics, kept across attachments."""
    with open(f"/sys/block/{os.path.basename(device)}/stat") as f:
        fields = [int(v) for v in f.read().split()]
    # read I/Os, merges, sectors, ticks, then the same four for writes; a sector is 512 B
    return fields[0], fields[2] * 512, fields[4], fields[6] * 512


def is_backed_by(device, image):
    """True if ``device`` is attached to the file ``image`` (compared by inode)."""
    try:
        with open(f"/sys/block/{os.path.basename(device)}/loop/backing_file") as f:
            backing = os.stat(f.read().rstrip("\n"))
        want = os.stat(image)
    except OSError:
        return False
    return (backing.st_dev, backing.st_ino) == (want.st_dev, want.st_ino)


def device_number(device):
    """"MAJ:MIN" of a loop device such as /dev/loop3."""
    with open(f"/sys/block/{os.path.basename(device)}/dev") as f:
        return f.read().strip()


def detach(device):
    """Detach ``device`` from its file (a no-op if it is already free)."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: not attached
            raise
    finally:
        os.close(fd)


def _loop_names():
    try:
        return [n for n in os.listdir("/sys/block") if n.startswith("loop")]
    except OSError:
        return []
