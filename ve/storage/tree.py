"""Directory walking inside an unpack destination that never leaves it.

Every path is reached from a descriptor of the destination, one component at
a time with ``O_NOFOLLOW``, so host root never follows a symlink. Symlinks on
the way to a member are resolved by hand against the tree as it is on disk
(the tarball is the only writer during unpack, so that state cannot change
under us) and refused when they would lead outside.

Directories are never removed or replaced during an unpack (``unpack``
refuses a non-directory member over a directory), which makes it safe to keep
a descriptor of the last parent directory between members.
"""

import errno
import os
import stat

from .members import refuse

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINK_HOPS = 40  # the kernel's own limit (ELOOP)


class Tree:
    """The destination directory of one unpack, addressed by path components."""

    def __init__(self, root_fd, id_shift):
        self.root_fd = root_fd
        self.id_shift = id_shift
        self._cached = None  # (raw parent parts, descriptor, resolved parent parts)

    def parent(self, parts, name):
        """Return a descriptor of the directory that will hold ``parts``.

        Missing directories on the way are created, owned by the VE's root.
        The descriptor belongs to the tree; do not close it.
        """
        raw = parts[:-1]
        if self._cached and self._cached[0] == raw:
            return self._cached[1]
        resolved = self.resolve(raw, name)
        fd = self.open_dir(resolved, name, create=True)
        self.close()
        self._cached = (raw, fd, resolved)
        return fd

    @property
    def parent_parts(self):
        """Return the symlink-free path of the directory ``parent`` last returned."""
        return self._cached[2]

    def forget(self):
        """Re-resolve the next parent: a symlink that may be on its way was replaced."""
        if self._cached:
            self._cached = (None,) + self._cached[1:]

    def resolve(self, parts, name):
        """Return ``parts`` with every symlink resolved, refusing to leave the tree."""
        done, todo, hops = [], list(parts), 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise refuse(name, "leads outside the tree: a symlink on its way "
                                 "climbs above the top with '..'")
                done.pop()
                continue
            st = self.lstat(done + [part])
            if st is not None and stat.S_ISLNK(st.st_mode):
                hops += 1
                todo[:0] = self._link_parts(done + [part], name, hops)
            elif st is None or stat.S_ISDIR(st.st_mode):
                done.append(part)
            else:
                raise refuse(name, f"needs {'/'.join(done + [part])!r} to be a directory")
        return tuple(done)

    def _link_parts(self, parts, name, hops):
        """Return the target components of the in-tree symlink ``parts``."""
        target = os.readlink("/".join(parts), dir_fd=self.root_fd)
        if target.startswith("/"):
            raise refuse(
                name, f"goes through symlink {'/'.join(parts)!r} -> {target!r}, "
                "which points outside the tree")
        if hops > MAX_SYMLINK_HOPS:
            raise refuse(name, "is reached through too many symlinks")
        return target.split("/")

    def lstat(self, parts):
        """Return the lstat of ``parts`` (symlink-free up to the last one) or None."""
        try:
            return os.lstat("/".join(parts) or ".", dir_fd=self.root_fd)
        except FileNotFoundError:
            return None

    def open_dir(self, parts, name, create=False):
        """Open the symlink-free directory path ``parts``; the caller closes it."""
        fd = os.dup(self.root_fd)
        try:
            for part in parts:
                fd = self._step(fd, part, create)  # _step closes the old fd
        except OSError as exc:
            # O_NOFOLLOW|O_DIRECTORY met a symlink or a file: a non-directory on the way.
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise refuse(name, f"needs {'/'.join(parts)!r} to be a directory") from exc
            raise
        return fd

    def _step(self, fd, part, create):
        """Open ``part`` below ``fd`` (closing ``fd``), creating it if asked."""
        try:
            try:
                return os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
            os.mkdir(part, 0o700, dir_fd=fd)
            self.own(fd, part, 0o755)
            return os.open(part, DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)

    def own(self, dir_fd, part, mode, uid=0, gid=0):
        """Give the new directory ``part`` VE ownership (shifted ids) and ``mode``."""
        fd = os.open(part, DIR_FLAGS, dir_fd=dir_fd)
        try:
            self.chown_chmod(fd, mode, uid, gid)
        finally:
            os.close(fd)

    def chown_chmod(self, fd, mode, uid=0, gid=0):
        """Set shifted ownership, then the mode (chown clears setuid/setgid bits)."""
        os.fchown(fd, uid + self.id_shift, gid + self.id_shift)
        os.fchmod(fd, mode & 0o7777)

    def close(self):
        """Close the cached parent descriptor."""
        if self._cached:
            os.close(self._cached[1])
            self._cached = None
