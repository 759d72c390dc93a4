"""Usage of a directory-layout private area: a walk, like ``du -s`` and ``du -s --inodes``."""

import stat

from ..fsutil import walk_tree


def directory_usage(path):
    """(bytes allocated, inodes) under ``path``, counting each hard-linked file once.

    The tree belongs to a VE that may be running: ``fsutil.walk_tree`` follows no
    symlink and stays on one filesystem. A walk costs time in proportion to the
    files (the image layouts read their filesystem's counters instead).
    """
    seen, used, inodes = set(), 0, 0
    for _, _, info in walk_tree(path):
        if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
        used += info.st_blocks * 512
        inodes += 1
    return used, inodes
