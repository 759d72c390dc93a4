"""Swap a stopped VE's root tree for a fresh template, in place.

Everything happens inside the private area's own filesystem, by renames
relative to directory descriptors: no space is needed for a second copy of
the old root, and host root never follows a path (or symlink) the VE made.

1. the old top-level entries move into ``.reinstall-old`` (host-root only);
2. the template unpacks into ``.reinstall-new`` and its entries move up;
3. ``.reinstall-old`` becomes ``/<keep_as>`` (VE root's, mode 0700), or is
   deleted.

A failure in 1-2 puts the old entries back, so the VE stays as it was.
"""

import os
import stat

from ..errors import AlreadyExists, InvalidConfig
from .unpack import empty_directory, unpack

OLD, NEW, DONE = ".reinstall-old", ".reinstall-new", ".reinstall-done"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_keep_name(name):
    """A top-level directory name for the kept root: letters, digits, '.', '_', '-'."""
    if not name or name in (".", "..", OLD, NEW, DONE) or len(name) > 64 or \
            not all(c.isascii() and (c.isalnum() or c in "._-") for c in name):
        raise InvalidConfig(f"bad name {name!r} for the old root: use one directory name "
                            "of letters, digits, '.', '_' and '-'")
    return name


def reinstall(private, tarball, id_shift, keep_as=None):
    """Replace the tree in directory ``private`` with ``tarball``'s (see the module)."""
    root = os.open(private, _DIR_FLAGS)
    try:
        recover(root)
        if keep_as is not None and keep_as in os.listdir(root):
            raise AlreadyExists(f"the VE already has /{keep_as}: remove it first or keep "
                                "the old root under another name")
        os.mkdir(OLD, 0o700, dir_fd=root)
        old = os.open(OLD, _DIR_FLAGS, dir_fd=root)
        try:
            _move_all(root, old, skip=(OLD,))
        finally:
            os.close(old)
        try:
            unpack(tarball, os.path.join(private, NEW), id_shift)
            new = os.open(NEW, _DIR_FLAGS, dir_fd=root)
            try:
                if keep_as is not None and keep_as in os.listdir(new):
                    raise InvalidConfig(f"the template has its own /{keep_as}: "
                                        "keep the old root under another name")
                _move_all(new, root)
                info = os.fstat(new)
            finally:
                os.close(new)
            os.rmdir(NEW, dir_fd=root)
            os.chown(root, info.st_uid, info.st_gid)
            os.chmod(root, info.st_mode & 0o7777)
        except BaseException:
            recover(root)
            raise
        if keep_as is not None:
            os.chown(OLD, id_shift, id_shift, dir_fd=root, follow_symlinks=False)
            os.rename(OLD, keep_as, src_dir_fd=root, dst_dir_fd=root)
        else:
            os.rename(OLD, DONE, src_dir_fd=root, dst_dir_fd=root)  # the new tree is whole
            _remove_tree(root, DONE)
    finally:
        os.close(root)


def recover(root):
    """Undo what a failed or interrupted reinstall left in the open directory ``root``.

    With ``.reinstall-old`` present the old tree is the VE's: whatever else is
    at the top (a partly moved new tree) goes and the old entries come back.
    ``.reinstall-done`` is an old tree already replaced; it just goes.
    """
    names = os.listdir(root)
    for name in (DONE, NEW):
        if name in names:
            _remove_tree(root, name)
    if OLD in names:
        for name in os.listdir(root):
            if name != OLD:
                _remove_tree(root, name)
        old = os.open(OLD, _DIR_FLAGS, dir_fd=root)
        try:
            _move_all(old, root)
        finally:
            os.close(old)
        os.rmdir(OLD, dir_fd=root)


def _move_all(source_fd, target_fd, skip=()):
    for name in os.listdir(source_fd):
        if name not in skip:
            os.rename(name, name, src_dir_fd=source_fd, dst_dir_fd=target_fd)


def _remove_tree(root, name):
    """Remove entry ``name`` of directory ``root``, a whole tree if it is one."""
    if not stat.S_ISDIR(os.lstat(name, dir_fd=root).st_mode):
        os.unlink(name, dir_fd=root)
        return
    sub = os.open(name, _DIR_FLAGS, dir_fd=root)
    try:
        empty_directory(sub)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=root)
