"""Build the ``busybox`` OS template from Debian's busybox-static."""

import logging
import platform
import re
import struct
import subprocess
from pathlib import Path

from ..errors import ResourceError, Unsupported
from . import cache, rootfs

log = logging.getLogger(__name__)

BUSYBOX_BINARY = "/bin/busybox"
INSTALL_HINT = "run `apt-get install busybox-static`"
PT_INTERP = 3  # ELF program header type naming the dynamic loader
# Debian architecture names for what uname -m reports.
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386", "armv7l": "armhf"}


def build_busybox(cache_dir, busybox=BUSYBOX_BINARY):
    """Build template ``busybox`` into ``cache_dir`` and return the tarball path.

    The tarball is reproducible (same bytes on every build from the same
    binary) and replaces any previous one atomically, together with
    ``busybox.json``. Raise Unsupported when busybox-static is missing.
    """
    binary = _read_static(busybox)
    applets = _run(busybox, "--list-full").split()
    meta = cache.TemplateMeta(
        name="busybox", distribution="busybox", version=_version(busybox),
        init=("/sbin/init",), stop_signal="SIGUSR2", arch=_arch())
    cache_dir = Path(cache_dir)
    cache.make_cache_dir(cache_dir)
    path = cache_dir / "busybox.tar.gz"
    items = rootfs.entries(binary, applets)
    cache.atomic_write(path, lambda out: rootfs.write_tar_gz(out, items))
    cache.drop_other_suffixes(cache_dir, "busybox", keep=".tar.gz")
    cache.write_meta(cache_dir, meta)
    log.info("built template busybox %s at %s (%d applets)", meta.version, path, len(applets))
    return path


def _read_static(busybox):
    """Return the busybox binary, refusing a missing or dynamically linked one."""
    try:
        binary = Path(busybox).read_bytes()
    except FileNotFoundError:
        raise Unsupported(f"{busybox} is missing: {INSTALL_HINT}") from None
    except OSError as exc:
        raise ResourceError(f"cannot read {busybox}: {exc}") from exc
    if binary[:4] != b"\x7fELF":
        raise Unsupported(f"{busybox} is not an ELF binary: {INSTALL_HINT}")
    try:
        dynamic = _has_interpreter(binary)
    except (struct.error, IndexError):
        raise Unsupported(f"{busybox} is a truncated ELF binary: {INSTALL_HINT}") from None
    if dynamic:
        # Debian's plain "busybox" package needs libc, which the template lacks.
        raise Unsupported(f"{busybox} is dynamically linked: {INSTALL_HINT}")
    return binary


def _has_interpreter(binary):
    """Return True if the ELF image has a PT_INTERP header (needs ld.so)."""
    order = "<" if binary[5] == 1 else ">"
    if binary[4] == 2:  # ELFCLASS64
        (phoff,) = struct.unpack_from(order + "Q", binary, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", binary, 0x36)
    else:
        (phoff,) = struct.unpack_from(order + "I", binary, 0x1C)
        phentsize, phnum = struct.unpack_from(order + "HH", binary, 0x2A)
    return any(
        struct.unpack_from(order + "I", binary, phoff + i * phentsize)[0] == PT_INTERP
        for i in range(phnum)
    )


def _version(busybox):
    """Return the version busybox reports, e.g. ``1.35.0``."""
    match = re.search(r"BusyBox v(\S+)", _run(busybox))
    if not match:
        raise ResourceError(f"{busybox} did not report a BusyBox version")
    return match.group(1)


def _run(busybox, *args):
    try:
        done = subprocess.run([busybox, *args], capture_output=True, text=True,
                              timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ResourceError(f"running {busybox} {' '.join(args)} failed: {exc}") from exc
    return done.stdout


def _arch():
    machine = platform.machine()
    return DEBIAN_ARCH.get(machine, machine)
