"""Small file helpers shared by the engine's modules."""

import errno
import os
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def atomic_write(path, content, mode=0o600, durable=True):
    """Replace ``path`` atomically: a reader sees the old or the new file, never a mix.

    ``content`` is str, bytes, or a callable that writes to the binary file
    it is given (for large streamed content). When ``durable``, the data is
    fsync'ed before the rename so a crash cannot leave an empty file in place
    of the old one.
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as out:  # O_RDWR: a filler may read back
            if callable(content):
                content(out)
            else:
                out.write(content.encode() if isinstance(content, str) else content)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.chmod(tmp, mode)  # the umask must not narrow or widen it
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def walk_tree(path):
    """Yield (dir_fd, name, lstat result) for every entry below directory ``path`` on
    its filesystem, a directory's entries before what is below them.

    The tree may be a VE's (hostile, arbitrarily deep): the walk is a loop, not a
    recursion, goes through directory descriptors opened without following
    symlinks (a directory swapped for a symlink is not entered), and holds
    descriptors in proportion to the depth only. An entry that is gone, or a
    subtree that cannot be opened, is left out. ``dir_fd`` is valid while the
    entry is being looked at (the caller may change or unlink the entry).
    """
    top = os.open(path, DIR_FLAGS)
    device = os.fstat(top).st_dev
    stack = [(top, [])]
    try:
        yield from _entries(top, device, stack[-1][1])
        while stack:
            fd, subdirs = stack[-1]
            if not subdirs:
                os.close(fd)
                stack.pop()
                continue
            try:
                child = os.open(subdirs.pop(), DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # gone, swapped for a symlink, or too deep for our descriptors
            if os.fstat(child).st_dev != device:
                os.close(child)
                continue
            stack.append((child, []))
            yield from _entries(child, device, stack[-1][1])
    finally:
        for fd, _ in stack:
            os.close(fd)


def _entries(fd, device, subdirs):
    """(fd, name, lstat) of the entries directly in ``fd`` on ``device``; their
    subdirectories' names are added to ``subdirs``."""
    for name in os.listdir(fd):
        try:
            info = os.lstat(name, dir_fd=fd)
        except OSError:
            continue
        if info.st_dev != device:
            continue
        if stat.S_ISDIR(info.st_mode):
            subdirs.append(name)
        yield fd, name, info


def remove_tree(path):
    """Remove ``path``, a whole tree if it is one, with ``rm -rf --one-file-system``:
    no symlink followed, no other filesystem entered, no recursion limit (a VE's
    tree may be hostile and arbitrarily deep). OSError if something stays."""
    import subprocess  # on use: this module is on every vectl call's import path
    out = subprocess.run(["rm", "-rf", "--one-file-system", "--", os.fspath(path)],
                         capture_output=True, text=True)
    if out.returncode:
        raise OSError(f"cannot remove {path}: {out.stderr.strip()}")


def data_ranges(fd, size):
    """(start, end) of each run of file ``fd`` (``size`` bytes) that holds data, in order
    (SEEK_DATA/SEEK_HOLE): a sparse file's holes are never read."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # only a hole is left
            raise
        offset = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, offset
