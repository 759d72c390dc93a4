"""Safe extraction of an OS template tarball into a new VE private area.

tarfile's own ``extractall`` filters are not used: ``data`` and ``tar`` strip
setuid/setgid bits (a Debian rootfs needs them for su, passwd, ping) and
``fully_trusted`` trusts everything. Instead each member passes the pure
checks in ``members.py`` and is written by ``extract.py`` relative to
directory descriptors (``tree.py``), never through a path that could lead
host root astray.
"""

import contextlib
import os
import shutil
from pathlib import Path

from ..errors import AlreadyExists, InvalidConfig, NotFound, ResourceError
from ..fsutil import remove_tree
from .extract import Extractor
from .members import ID_LIMIT
from .tree import Tree

MAX_ID_SHIFT = 2**32 - 1 - ID_LIMIT  # 2**32 - 1 is the invalid uid


def unpack(tarball, dest, id_shift, into_empty=False):
    """Extract ``tarball`` into the new directory ``dest`` with ids shifted by ``id_shift``.

    ``dest`` must not exist (or, ``into_empty``, be an empty directory: a
    freshly mounted image); its parent must. uid/gid N of a member becomes
    N + id_shift on the host; modes keep setuid, setgid and sticky bits. A
    hostile member raises InvalidConfig naming it, and what was extracted is
    removed again, so a failed unpack leaves nothing behind.
    """
    with _open_tarball(tarball) as source:
        unpack_fileobj(source, dest, id_shift, into_empty)


def unpack_fileobj(source, dest, id_shift, into_empty=False):
    """Like ``unpack``, reading the tarball from the binary file object ``source``."""
    shift = _check_shift(id_shift)
    dest = Path(dest)
    root_fd = _open_empty(dest) if into_empty else _make_dest(dest)
    try:
        Extractor(source, Tree(root_fd, shift)).run()
    except BaseException:
        if into_empty:
            with contextlib.suppress(OSError):  # best effort: the unpack error matters
                empty_directory(dest)
        else:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        os.close(root_fd)


def empty_directory(path):
    """Remove everything inside directory ``path`` (``rm -rf``: no symlink is
    followed, no other filesystem entered, no recursion limit)."""
    for name in os.listdir(path):
        remove_tree(os.path.join(path, name))


def _check_shift(id_shift):
    if isinstance(id_shift, bool) or not isinstance(id_shift, int) \
            or not 0 <= id_shift <= MAX_ID_SHIFT:
        raise InvalidConfig(f"bad id shift {id_shift!r}: use 0..{MAX_ID_SHIFT}")
    return id_shift


def _open_tarball(tarball):
    try:
        return open(tarball, "rb")
    except FileNotFoundError:
        raise NotFound(f"template tarball {tarball} does not exist") from None
    except OSError as exc:
        raise ResourceError(f"cannot read template tarball {tarball}: {exc}") from exc


def _open_empty(dest):
    try:
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ResourceError(f"cannot open unpack destination {dest}: {exc}") from exc
    if os.listdir(fd):
        os.close(fd)
        raise AlreadyExists(f"unpack destination {dest} is not empty")
    return fd


def _make_dest(dest):
    """Create ``dest`` root-only (0700) so nobody else can touch it while we fill it."""
    try:
        os.mkdir(dest, 0o700)
        return os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileExistsError:
        raise AlreadyExists(f"unpack destination {dest} already exists") from None
    except OSError as exc:
        raise ResourceError(f"cannot create unpack destination {dest}: {exc}") from exc
