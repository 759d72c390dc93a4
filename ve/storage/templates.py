"""OS template caches: find, describe, list and import them (recipes.py builds them).

Templates live in ``VE_ROOT/template/cache`` as ``NAME.tar.gz`` (or
``.tar.xz``, ``.tar.bz2``, ``.tar``) plus an optional ``NAME.json``; see
``cache.py`` for the file rules and ``unpack.py`` for safe extraction.
"""

import os
import stat
from pathlib import Path

from .. import validate
from ..errors import InvalidConfig, NotFound, ResourceError
from .cache import (DEFAULT_INIT, DEFAULT_STOP_SIGNAL, SUFFIXES, TemplateMeta,
                    atomic_write, drop_other_suffixes, make_cache_dir, read_meta,
                    write_meta)

__all__ = ["TemplateMeta", "build_busybox", "cache_path", "import_tarball",
           "list_templates", "metadata", "unpack"]

# Leading bytes of each compression tarfile reads; anything else is plain tar.
MAGIC = ((b"\x1f\x8b", ".tar.gz"), (b"\xfd7zXZ\x00", ".tar.xz"), (b"BZh", ".tar.bz2"))


def build_busybox(cache_dir, busybox="/bin/busybox"):
    """Build the busybox template from Debian's busybox-static; see ``busybox.py``."""
    # Imported on use: tarfile and gzip would slow every vectl start.
    from .busybox import build_busybox as build
    return build(cache_dir, busybox)


def unpack(tarball, dest, id_shift, into_empty=False):
    """Safely extract ``tarball`` into new (or empty) directory ``dest``; see ``unpack.py``."""
    from .unpack import unpack as unpack_safely
    return unpack_safely(tarball, dest, id_shift, into_empty)


def cache_path(cache_dir, name):
    """Return the tarball of template ``name``; raise NotFound if it is not installed."""
    name = validate.template_name(name)
    for suffix in SUFFIXES:
        path = Path(cache_dir) / f"{name}{suffix}"
        if path.is_file():
            return path
    raise NotFound(f"template {name} is not installed; run `vectl template build {name}` "
                   f"or `vectl template import {name} FILE`")


def metadata(cache_dir, name):
    """Return the TemplateMeta of installed template ``name`` (defaults without JSON)."""
    cache_path(cache_dir, name)
    return read_meta(cache_dir, name)


def list_templates(cache_dir):
    """Return the TemplateMeta of every installed template, sorted by name."""
    try:
        files = os.listdir(cache_dir)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ResourceError(f"cannot list template cache {cache_dir}: {exc}") from exc
    names = {_template_of(f) for f in files} - {None}
    return [metadata(cache_dir, name) for name in sorted(names)]


def _template_of(filename):
    """Return the template a cache file belongs to, or None (temp files, JSON)."""
    for suffix in SUFFIXES:
        if filename.endswith(suffix):
            name = filename[: -len(suffix)]
            try:
                return validate.template_name(name)
            except InvalidConfig:  # a dot-named temp file or a stray file
                return None
    return None


def import_tarball(cache_dir, name, source_path, *, distribution=None, version="",
                   init=DEFAULT_INIT, stop_signal=DEFAULT_STOP_SIGNAL, arch="", services=(),
                   cgroup2=False):
    """Install the rootfs tarball ``source_path`` as template ``name``; return its path.

    The file is copied first and the copy is test-unpacked with the same
    checks as ``unpack``, so a hostile tarball raises InvalidConfig and
    leaves no cache file (and a source changed meanwhile cannot slip by).
    """
    name = validate.template_name(name)
    meta = TemplateMeta(name=name, distribution=distribution or name, version=version,
                        init=init, stop_signal=stop_signal, arch=arch, services=services,
                        cgroup2=cgroup2)
    cache_dir = Path(cache_dir)
    make_cache_dir(cache_dir)
    with _open_regular(source_path) as source:
        suffix = _suffix_of(source)
        path = cache_dir / f"{name}{suffix}"
        atomic_write(path, lambda out: _copy_and_check(source, out, cache_dir))
    drop_other_suffixes(cache_dir, name, keep=suffix)
    write_meta(cache_dir, meta)
    return path


def _open_regular(source_path):
    try:
        source = open(source_path, "rb")
    except FileNotFoundError:
        raise NotFound(f"tarball {source_path} does not exist") from None
    except OSError as exc:
        raise ResourceError(f"cannot read tarball {source_path}: {exc}") from exc
    if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
        source.close()
        raise ResourceError(f"tarball {source_path} is not a regular file")
    return source


def _suffix_of(source):
    head = source.read(6)
    source.seek(0)
    return next((suffix for magic, suffix in MAGIC if head.startswith(magic)), ".tar")


def _copy_and_check(source, out, cache_dir):
    """Copy ``source`` to ``out``, then unpack the copy once to validate it."""
    import shutil  # imported here, like tempfile: only imports need them
    import tempfile
    shutil.copyfileobj(source, out, 1 << 20)
    out.flush()
    # mkdtemp's 0700 keeps the trial tree (unshifted, so with root-owned
    # setuid files) out of every other user's reach until it is removed.
    trial = Path(tempfile.mkdtemp(prefix=".import-", dir=cache_dir))
    try:
        # The dup shares out's offset; harmless, as nothing is written after this.
        with os.fdopen(os.dup(out.fileno()), "rb") as copy:
            copy.seek(0)
            from .unpack import unpack_fileobj
            unpack_fileobj(copy, trial / "rootfs", 0)
    finally:
        shutil.rmtree(trial, ignore_errors=True)
