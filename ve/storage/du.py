"""Usage of a directory-layout private area: a walk, like ``du -s`` and ``du -s --inodes``."""

import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def directory_usage(path):
    """(bytes allocated, inodes) under ``path``, counting each hard-linked file once.

    The tree belongs to a VE that may be running, so the walk goes through
    directory descriptors opened without following symlinks (a directory the
    VE swaps for a symlink is not entered) and stays on one filesystem. Open
    descriptors grow with the depth only; a subtree that cannot be opened is
    left out. A walk costs time in proportion to the files (the image layouts
    read their filesystem's counters instead).
    """
    seen, used, inodes = set(), 0, 0
    top = os.open(path, _DIR_FLAGS)
    device = os.fstat(top).st_dev
    stack = [(top, _subdirs_and_count(top, device, seen))]
    used, inodes = stack[0][1][1], stack[0][1][2]
    while stack:
        fd, (pending, _, _) = stack[-1]
        if not pending:
            os.close(fd)
            stack.pop()
            continue
        name = pending.pop()
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue  # gone, swapped for a symlink, or too deep for our descriptors
        if os.fstat(child).st_dev != device:
            os.close(child)
            continue
        entry = _subdirs_and_count(child, device, seen)
        used, inodes = used + entry[1], inodes + entry[2]
        stack.append((child, entry))
    return used, inodes


def _subdirs_and_count(fd, device, seen):
    """([subdirectory names], bytes, inodes) of the entries directly in ``fd``."""
    subdirs, used, inodes = [], 0, 0
    for name in os.listdir(fd):
        try:
            info = os.lstat(name, dir_fd=fd)
        except OSError:
            continue
        if info.st_dev != device:
            continue
        if stat.S_ISDIR(info.st_mode):
            subdirs.append(name)
        elif info.st_nlink > 1:
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
        used += info.st_blocks * 512
        inodes += 1
    return subdirs, used, inodes
