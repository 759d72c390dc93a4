"""Files of the template cache: tarball names, metadata JSON, atomic writes.

A template ``NAME`` is ``NAME.tar.gz`` (or ``.tar.xz``, ``.tar.bz2``,
``.tar``: whatever tarfile reads) in the cache directory, with an optional
``NAME.json`` beside it. Every file is written to a dot-named temporary file
and renamed into place, so a reader sees the old file or the new one, never
half of one; dot-names are not valid template names, so listings skip them.
"""

import json
import os
import signal
from collections import namedtuple
from pathlib import Path

from .. import fsutil, validate
from ..errors import InvalidConfig, ResourceError

# Looked up in this order; the compressed forms are what builds write.
SUFFIXES = (".tar.gz", ".tar.xz", ".tar.bz2", ".tar")
DEFAULT_INIT = ("/sbin/init",)
DEFAULT_STOP_SIGNAL = "SIGTERM"


class TemplateMeta(namedtuple("TemplateMeta",
                              "name distribution version init stop_signal arch services cgroup2",
                              defaults=("", "", DEFAULT_INIT, DEFAULT_STOP_SIGNAL, "", (),
                                        False))):
    """What the engine needs to know about a template to run VEs from it (checked).

    ``init`` is the argv of the VE's PID 1 and ``stop_signal`` what asks it to
    halt (a name such as SIGPWR or SIGRTMIN+4); ``services`` names what the
    template starts by default (e.g. sshd); ``cgroup2``: its init manages
    cgroups of its own (systemd), so the VE gets its cgroup2 tree mounted at
    /sys/fs/cgroup and delegated to its root.
    """

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        meta = super().__new__(cls, *args, **kwargs)
        validate.template_name(meta.name)
        init = tuple(meta.init) if isinstance(meta.init, (list, tuple)) else ()
        if not init or not all(isinstance(a, str) for a in init) or not init[0].startswith("/"):
            raise InvalidConfig(f"template {meta.name}: init must be a list of strings "
                                "starting with an absolute path")
        if signal_number(meta.stop_signal) is None:
            raise InvalidConfig(f"template {meta.name}: unknown stop signal {meta.stop_signal!r}")
        for field in ("distribution", "version", "arch"):
            if not isinstance(getattr(meta, field), str):
                raise InvalidConfig(f"template {meta.name}: {field} must be a string")
        services = tuple(meta.services) if isinstance(meta.services, (list, tuple)) else None
        if services is None or not all(isinstance(s, str) for s in services):
            raise InvalidConfig(f"template {meta.name}: services must be a list of names")
        if not isinstance(meta.cgroup2, bool):
            raise InvalidConfig(f"template {meta.name}: cgroup2 must be true or false")
        return meta._replace(init=init, services=services)

    def to_dict(self):
        """Return the JSON form written to ``NAME.json``."""
        data = self._asdict()
        data["init"] = list(self.init)
        data["services"] = list(self.services)
        return data


def signal_number(name):
    """The number of signal ``name`` ("SIGPWR", "SIGRTMIN+4"), or None if there is none."""
    if not isinstance(name, str):
        return None
    if name in signal.Signals.__members__:
        return int(signal.Signals[name])
    base, plus, offset = name.partition("+")
    if base == "SIGRTMIN" and plus and offset.isdigit() \
            and signal.SIGRTMIN + int(offset) <= signal.SIGRTMAX:
        return signal.SIGRTMIN + int(offset)
    return None


def meta_path(cache_dir, name):
    """Return the path of template ``name``'s metadata JSON."""
    return Path(cache_dir) / f"{name}.json"


def read_meta(cache_dir, name):
    """Return ``name``'s TemplateMeta from its JSON, or defaults if there is none."""
    path = meta_path(cache_dir, name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return TemplateMeta(name=name, distribution=name)
    except (OSError, ValueError) as exc:
        raise InvalidConfig(f"template {name}: unreadable metadata {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidConfig(f"template {name}: metadata {path} is not a JSON object")
    known = {k: data[k] for k in ("distribution", "version", "init", "stop_signal", "arch",
                                  "services", "cgroup2") if k in data}
    return TemplateMeta(**{"distribution": name, **known, "name": name})


def write_meta(cache_dir, meta):
    """Write ``meta`` atomically as ``NAME.json`` in ``cache_dir``."""
    text = json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write(meta_path(cache_dir, meta.name), lambda out: out.write(text.encode()))


def atomic_write(path, fill):
    """Write ``path`` by calling ``fill(binary_file)`` on a temp file, then renaming it."""
    try:
        fsutil.atomic_write(path, fill, mode=0o644)
    except OSError as exc:
        raise ResourceError(f"cannot write {path}: {exc}") from exc


def make_cache_dir(cache_dir):
    """Create the cache directory ``cache_dir`` (and parents) if needed."""
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResourceError(f"cannot create template cache {cache_dir}: {exc}") from exc


def drop_other_suffixes(cache_dir, name, keep):
    """Remove ``name``'s tarballs other than ``keep`` so one file defines the template."""
    for suffix in SUFFIXES:
        if suffix != keep:
            _unlink(Path(cache_dir) / f"{name}{suffix}")


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
