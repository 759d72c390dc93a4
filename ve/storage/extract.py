"""Write the members of one tarball stream into a Tree.

Each new file is created root-owned with mode 0600, filled, given to the
VE's (shifted) owner and only then given its real mode: chown clears
setuid/setgid, and this order means a root-owned setuid file never exists.
"""

import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zlib

from ..errors import InvalidConfig, ResourceError
from . import members
from .members import refuse

FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FIFO_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
# Created when the tarball lacks them: the engine mounts on the first three,
# and a shell expects the last two.
REQUIRED_DIRS = (("proc", 0o555), ("sys", 0o555), ("dev", 0o755),
                 ("tmp", 0o1777), ("root", 0o700))
_CORRUPT = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


class Extractor:
    """One pass over a tarball stream, writing each member into a Tree."""

    def __init__(self, source, tree):
        self.source, self.tree = source, tree
        self.inodes = set()  # (st_dev, st_ino) of what we wrote: valid hardlink sources
        self.dir_times = []  # directory mtimes, set last (adding entries changes them)
        self.member = None

    def run(self):
        """Extract every member, then fix up the top-level directories."""
        try:
            # Stream mode ("r|*") never seeks back, so a gzip is decompressed once.
            with tarfile.open(fileobj=self.source, mode="r|*") as tar:
                for member in tar:
                    self.member = member  # named in errors raised below
                    parts = members.check(member)
                    if parts is not None:
                        self._extract(tar, member, parts)
            self._finish()
        except _CORRUPT as exc:
            raise InvalidConfig(f"template tarball is not a readable tar archive: {exc}") from exc
        except ValueError as exc:  # e.g. a NUL byte in a symlink target
            raise refuse(self._name(), f"is malformed: {exc}") from exc
        except OSError as exc:
            if exc.errno is None:  # bz2 and friends report bad data as a bare OSError
                raise InvalidConfig(f"template tarball is not readable: {exc}") from exc
            raise ResourceError(f"unpacking member {self._name()!r} failed: {exc}") from exc
        finally:
            self.tree.close()

    def _name(self):
        return self.member.name if self.member else "(none)"

    def _extract(self, tar, member, parts):
        pfd = self.tree.parent(parts, member.name)
        leaf = parts[-1]
        if member.islnk():
            self._hardlink(member, pfd, leaf)
        elif member.isdir():
            if not self._make_room(member, pfd, leaf):
                os.mkdir(leaf, 0o700, dir_fd=pfd)
            self.tree.own(pfd, leaf, member.mode, member.uid, member.gid)
            self.dir_times.append((self.tree.parent_parts + (leaf,), member.mtime))
        elif self._make_room(member, pfd, leaf):
            raise refuse(member.name, "would replace a directory")
        elif member.issym():
            self._symlink(member, pfd, leaf)
        elif member.isfifo():
            os.mkfifo(leaf, 0o600, dir_fd=pfd)
            self._finish_node(member, os.open(leaf, FIFO_FLAGS, dir_fd=pfd))
        else:
            self._file(tar, member, os.open(leaf, FILE_FLAGS, 0o600, dir_fd=pfd))

    def _make_room(self, member, pfd, leaf):
        """Clear ``leaf`` for ``member``; return True if it is a directory to merge into."""
        st = self._lstat(pfd, leaf)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            return True
        if stat.S_ISLNK(st.st_mode):
            if not member.issym():
                # Opening or linking over it could reach whatever it points at.
                raise refuse(member.name, "would be written over an existing symlink")
            self.tree.forget()  # the old link may be on the way to the cached parent
        os.unlink(leaf, dir_fd=pfd)
        return False

    @staticmethod
    def _lstat(dir_fd, leaf):
        try:
            return os.lstat(leaf, dir_fd=dir_fd)
        except FileNotFoundError:
            return None

    def _file(self, tar, member, fd):
        with open(fd, "wb", closefd=False) as out:
            shutil.copyfileobj(tar.extractfile(member), out, 1 << 20)
        self._finish_node(member, fd)

    def _finish_node(self, member, fd):
        """Own, chmod, date and remember a new file or FIFO, then close it."""
        try:
            self.tree.chown_chmod(fd, member.mode, member.uid, member.gid)
            _set_mtime(member, fd)
            self._remember(os.fstat(fd))
        finally:
            os.close(fd)

    def _symlink(self, member, pfd, leaf):
        # Targets are kept as they are: an absolute one resolves inside the VE.
        os.symlink(member.linkname, leaf, dir_fd=pfd)
        shift = self.tree.id_shift
        os.chown(leaf, member.uid + shift, member.gid + shift,
                 dir_fd=pfd, follow_symlinks=False)
        _set_mtime(member, leaf, dir_fd=pfd, follow_symlinks=False)
        self._remember(os.lstat(leaf, dir_fd=pfd))

    def _hardlink(self, member, pfd, leaf):
        """Link ``leaf`` to an entry this unpack wrote earlier, and nothing else."""
        src = members.split(member.linkname, member.name)
        try:
            sfd = self.tree.open_dir(self.tree.resolve(src[:-1], member.name), member.name)
        except FileNotFoundError:
            sfd = None
        try:
            st = self._lstat(sfd, src[-1]) if sfd is not None else None
            if st is None or (st.st_dev, st.st_ino) not in self.inodes:
                raise refuse(member.name, f"links to {member.linkname!r}, "
                             "which is not an earlier file of this tarball")
            existing = self._lstat(pfd, leaf)
            if existing and (existing.st_dev, existing.st_ino) == (st.st_dev, st.st_ino):
                return  # already the same file
            if self._make_room(member, pfd, leaf):
                raise refuse(member.name, "would replace a directory")
            os.link(src[-1], leaf, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            if sfd is not None:
                os.close(sfd)

    def _remember(self, st):
        self.inodes.add((st.st_dev, st.st_ino))

    def _finish(self):
        """Create missing mount points, date directories, and give / to the VE's root."""
        self.member = None
        root = self.tree.root_fd
        for name, mode in REQUIRED_DIRS:
            if self._lstat(root, name) is None:
                os.mkdir(name, 0o700, dir_fd=root)
                self.tree.own(root, name, mode)
        for parts, mtime in self.dir_times:  # symlink-free, and directories stay put
            fd = self.tree.open_dir(parts, "/".join(parts))
            try:
                _set_mtime_value(mtime, fd)
            finally:
                os.close(fd)
        self.tree.chown_chmod(root, 0o755)


def _set_mtime(member, target, **kwargs):
    _set_mtime_value(member.mtime, target, **kwargs)


def _set_mtime_value(mtime, target, **kwargs):
    try:
        os.utime(target, (mtime, mtime), **kwargs)
    except (OverflowError, ValueError):
        pass  # an absurd timestamp is not worth refusing a template over
