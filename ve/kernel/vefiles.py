"""Files of a VE, opened from inside it (see ``inside``): never followed out of it.

These run in the helper that joined the VE's mount namespace as VE root.
Every path is resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
from the VE's root: ``..`` and absolute symlinks stay inside the VE, and
/proc magic links are refused. Only regular files are read, and only up to a
size limit; a file is replaced by writing a new one beside it and renaming it
over the old, so a reader in the VE sees the old or the new file, and a FIFO
or device planted in its place is replaced, never opened for writing.
"""

import ctypes
import errno
import os
import stat

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPENAT2 = 437  # x86_64
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
READ_LIMIT = 1 << 20


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def open_in_root(path, flags, mode=0, root=None):
    """openat2 of ``path`` below the VE's root (the caller's "/", or the directory
    fd ``root``); return the fd."""
    own = root is None
    if own:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE)
        fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(root),
                           os.fsencode(path.lstrip("/") or "."), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how)))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return fd
    finally:
        if own:
            os.close(root)


def read(path, limit=READ_LIMIT):
    """Return (bytes, os.stat_result) of the regular file ``path``; at most ``limit`` bytes."""
    fd = open_in_root(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
        chunks, size = [], 0
        while chunk := os.read(fd, min(65536, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
        return b"".join(chunks), info
    finally:
        os.close(fd)


def replace(path, data, mode=0o644, owner=None, durable=True):
    """Make ``path`` a regular file holding ``data`` (atomically, by rename).

    ``owner`` (uid, gid) as seen in the VE; default: the caller's (VE root).
    ``durable``: fsync before the rename (not for files rewritten at every start).
    """
    parent, name = _split(path)
    directory = open_in_root(parent, os.O_PATH | os.O_DIRECTORY)
    temp = f".{name}.ve-{os.urandom(4).hex()}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=directory)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=directory)
        except OSError:
            pass
        raise
    finally:
        os.close(directory)


def make_dir(path, mode):
    """Make directory ``path`` (its parent must exist); an existing directory is fine."""
    parent, name = _split(path)
    directory = open_in_root(parent, os.O_PATH | os.O_DIRECTORY)
    try:
        try:
            os.mkdir(name, mode, dir_fd=directory)
        except FileExistsError:
            pass
    finally:
        os.close(directory)
    os.close(open_in_root(path, os.O_PATH | os.O_DIRECTORY))  # a directory, not a file or link


def _split(path):
    parent, _, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise OSError(errno.EINVAL, "not a file name", path)
    return parent or "/", name
