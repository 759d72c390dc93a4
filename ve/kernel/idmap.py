"""Idmapped mounts: one tree seen with a VE's uid/gid shift, no file chowned.

A shared template layer is stored with the template's own owners (0..65535).
An unprivileged VE's root is host uid ``base``; through a mount idmapped with
a user namespace that maps 0..size-1 to base..base+size-1, the same files
appear owned by the VE's ids, so every VE of the node reads one copy (one
page cache) of them. The mapping namespace is a throw-away: the kernel keeps
what it needs of it with the mount.
"""

import ctypes
import os

from . import libc

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPEN_TREE, _SYS_MOUNT_SETATTR = 428, 442  # the same number on every architecture
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
_AT_FDCWD, _AT_EMPTY_PATH, _AT_RECURSIVE = -100, 0x1000, 0x8000
_AT_SYMLINK_NOFOLLOW = 0x100
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def user_namespace(base, size):
    """An fd of a new user namespace mapping uids and gids 0..size-1 to base.. on the host.

    A forked child makes it (unshare needs a single-threaded caller) and exits
    once its namespace is open here.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(hold_w)
            libc.unshare(libc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(hold_r, 1)  # until the parent has what it needs (or is gone)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(0, "the helper could not make a user namespace")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as handle:
                handle.write(f"0 {base} {size}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(hold_w)
        os.waitpid(pid, 0)


def idmapped_tree(path, userns_fd, attrs=0):
    """A detached copy of the mount tree at ``path``, idmapped with ``userns_fd``;
    ``attrs``: more MOUNT_ATTR_* flags (read-only, say). Returns its fd, which a
    mount may name as ``/proc/self/fd/<fd>``."""
    tree = _check(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(path),
                                _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE
                                | _AT_SYMLINK_NOFOLLOW),
                  f"open_tree {path}")
    try:
        attr = _MountAttr(attr_set=_MOUNT_ATTR_IDMAP | attrs, userns_fd=userns_fd)
        _check(_libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH | _AT_RECURSIVE,
                             ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
               f"idmap {path}")
    except OSError:
        os.close(tree)
        raise
    return tree
