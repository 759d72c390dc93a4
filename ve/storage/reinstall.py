"""Swap a stopped VE's root tree for a fresh template, in place.

Everything happens inside the private area's own filesystem, by renames
relative to a directory descriptor: no space is needed for a second copy of
the old root, and host root never follows a path (or symlink) the VE made.

1. the old top-level entries move into ``.reinstall-<tag>-old``;
2. the template unpacks into ``.reinstall-<tag>-new`` and its entries move up;
3. the old tree becomes ``/<keep_as>`` (VE root's, mode 0700), or is deleted.

``<tag>`` is random per reinstall and the progress is kept in a journal on
the host side (never in the VE's tree, whose names the VE chooses), so
``recover`` can finish or undo an interrupted reinstall exactly: before step
3 the old root comes back, after it the new one stays. Trees are deleted with
``rm -rf --one-file-system``: no recursion limit, no symlink followed.
"""

import json
import os
import secrets

from ..errors import AlreadyExists, InvalidConfig
from ..fsutil import atomic_write, remove_tree
from .unpack import unpack

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_keep_name(name):
    """A top-level directory name for the kept root: letters, digits, '.', '_', '-'."""
    if not name or name in (".", "..") or name.startswith(".reinstall-") or len(name) > 64 \
            or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name):
        raise InvalidConfig(f"bad name {name!r} for the old root: use one directory name "
                            "of letters, digits, '.', '_' and '-'")
    return name


def reinstall(private, tarball, id_shift, journal, keep_as=None):
    """Replace the tree in directory ``private`` with ``tarball``'s (see the module).

    ``journal`` is a host-side file path for the progress record.
    """
    private = str(private)
    recover(private, journal)
    root = os.open(private, _DIR_FLAGS)
    try:
        if keep_as is not None and keep_as in os.listdir(root):
            raise AlreadyExists(f"the VE already has /{keep_as}: remove it first or keep "
                                "the old root under another name")
        tag = secrets.token_hex(6)
        old, new = _names(tag)
        _note(journal, tag, "old", keep_as)
        try:
            os.mkdir(old, 0o700, dir_fd=root)
            _move_all(root, old, to_sub=True, skip=(old,))
            _note(journal, tag, "new", keep_as)
            unpack(tarball, os.path.join(private, new), id_shift)
            sub = os.open(new, _DIR_FLAGS, dir_fd=root)
            try:
                if keep_as is not None and keep_as in os.listdir(sub):
                    raise InvalidConfig(f"the template has its own /{keep_as}: "
                                        "keep the old root under another name")
                _move_all(sub, root, to_sub=False)
                info = os.fstat(sub)
            finally:
                os.close(sub)
            os.rmdir(new, dir_fd=root)
            os.chown(root, info.st_uid, info.st_gid)
            os.chmod(root, info.st_mode & 0o7777)
        except BaseException:
            os.close(root)
            root = None
            recover(private, journal)
            raise
        _note(journal, tag, "keep" if keep_as is not None else "done", keep_as)
    finally:
        if root is not None:
            os.close(root)
    recover(private, journal)  # step 3, the same code as after a crash


def recover(private, journal):
    """Finish or undo the reinstall ``journal`` records, if any (safe to repeat)."""
    try:
        with open(journal) as f:
            state = json.load(f)
        tag, phase, keep_as = state["tag"], state["phase"], state.get("keep")
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        os.unlink(journal)  # unreadable: written by no finished step of ours
        return
    old, new = _names(tag)
    root = os.open(private, _DIR_FLAGS)
    try:
        names = os.listdir(root)
        if phase in ("old", "new"):  # undo: the old root comes back
            if new in names:
                _remove(private, new)
            if old in names:
                if phase == "new":  # all old entries had moved: the rest at the top is new
                    for name in names:
                        if name not in (old, new):
                            _remove(private, name)
                sub = os.open(old, _DIR_FLAGS, dir_fd=root)
                try:
                    _move_all(sub, root, to_sub=False)
                finally:
                    os.close(sub)
                os.rmdir(old, dir_fd=root)
        elif old in names and phase == "keep":
            os.chown(old, *_owner(root), dir_fd=root, follow_symlinks=False)
            os.rename(old, keep_as, src_dir_fd=root, dst_dir_fd=root)
        elif old in names:  # "done": the new root is whole
            _remove(private, old)
    finally:
        os.close(root)
    os.unlink(journal)


def _names(tag):
    return f".reinstall-{tag}-old", f".reinstall-{tag}-new"


def _note(journal, tag, phase, keep_as):
    atomic_write(journal, json.dumps({"tag": tag, "phase": phase, "keep": keep_as}) + "\n")


def _owner(root):
    info = os.fstat(root)  # the new root belongs to VE root
    return info.st_uid, info.st_gid


def _move_all(source_fd, target, to_sub, skip=()):
    """Move every entry of ``source_fd`` into ``target``: a subdirectory name of
    ``source_fd`` (``to_sub``), or a directory descriptor."""
    if to_sub:
        sub = os.open(target, _DIR_FLAGS, dir_fd=source_fd)
        try:
            _move_all(source_fd, sub, to_sub=False, skip=skip + (target,))
        finally:
            os.close(sub)
        return
    for name in os.listdir(source_fd):
        if name not in skip:
            os.rename(name, name, src_dir_fd=source_fd, dst_dir_fd=target)


def _remove(private, name):
    remove_tree(os.path.join(private, name))
