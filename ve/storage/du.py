"""Usage of a directory-layout private area: a walk, like ``du -s`` and ``du -s --inodes``."""

import os


def directory_usage(path):
    """(bytes allocated, inodes) under ``path``, counting each hard-linked file once.

    A walk costs time in proportion to the files (the image layout reads its
    filesystem's counters instead); symlinks are counted, never followed.
    """
    seen, used, inodes = set(), 0, 0
    stack = [str(path)]
    while stack:
        top = stack.pop()
        try:
            entries = os.scandir(top)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if info.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                used += info.st_blocks * 512
                inodes += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return used, inodes
