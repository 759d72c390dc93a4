"""Build the ``debian-12`` OS template with debootstrap from Debian's packages.

The VE boots Debian's own sysvinit (systemd would need to own a cgroup
hierarchy, which an unprivileged VE's root does not) and starts sshd. The
rootfs is adjusted for life in a VE:

- no getty on ttys a VE does not have; SIGPWR (the template's stop signal)
  halts: inittab's power-fail entries run ``shutdown -h`` (Debian's call a
  script that does not exist);
- no SSH host keys in the template: each VE makes its own at first boot
  (``/etc/init.d/ssh-hostkeys``, before sshd); root may log in with a password
  (set from inside the VE at create or reinstall) or a key;
- nothing of the build host: no /etc/hostname (the engine sets the name),
  empty resolv.conf and a localhost-only /etc/hosts (the engine writes both
  when the VE has addresses), no apt lists or logs.

Every command runs with an argument list; the rootfs is written by Python,
then packed by tar and imported like any tarball (checked member by member).
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ResourceError, Unsupported
from . import templates

NAME = "debian-12"
SUITE = "bookworm"
MIRROR_ENV = "VE_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("sysvinit-core", "openssh-server", "iproute2", "procps", "iputils-ping",
            "less", "ca-certificates")

HOSTKEYS_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          ssh-hostkeys
# Required-Start:    $local_fs
# Required-Stop:
# X-Start-Before:    ssh
# Default-Start:     2 3 4 5
# Default-Stop:
# Short-Description: Make this VE's own SSH host keys at its first boot
### END INIT INFO
case "$1" in
  start) ssh-keygen -A ;;  # only the key types that are missing
  stop|restart|force-reload|status) ;;
  *) echo "Usage: $0 start" >&2; exit 3 ;;
esac
exit 0
"""
SOURCES = f"""deb {DEFAULT_MIRROR} {SUITE} main
deb {DEFAULT_MIRROR} {SUITE}-updates main
deb http://deb.debian.org/debian-security {SUITE}-security main
"""


def build_debian(cache_dir, mirror=None):
    """Build template ``debian-12`` into ``cache_dir``; return the tarball path.

    Takes about a minute with a nearby mirror (``$VE_DEBIAN_MIRROR``, default
    deb.debian.org). Raise Unsupported without debootstrap, ResourceError if
    a step fails; nothing is left behind either way.
    """
    if shutil.which("debootstrap") is None:
        raise Unsupported("building debian-12 needs debootstrap (apt-get install debootstrap)")
    mirror = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    cache_dir = Path(cache_dir)
    templates.make_cache_dir(cache_dir)
    work = Path(tempfile.mkdtemp(prefix=".build-debian-", dir=cache_dir))  # 0700, dot-named
    try:
        root = work / "rootfs"
        # In a mount namespace of its own: the /proc and /sys it mounts in the
        # rootfs vanish with it, even if it is killed (a timeout) mid-way.
        _run(["unshare", "--mount", "--propagation", "private",
              "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              SUITE, str(root), mirror], "debootstrap")
        _adjust(root)
        arch = _run(["chroot", str(root), "dpkg", "--print-architecture"], "dpkg").strip()
        tarball = work / "rootfs.tar.gz"
        _run(["tar", "-C", str(root), "--numeric-owner", "-czf", str(tarball), "."], "tar")
        return templates.import_tarball(
            cache_dir, NAME, tarball, distribution="debian", version="12",
            init=("/sbin/init",), stop_signal="SIGPWR", arch=arch, services=("ssh",))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _adjust(root):
    inittab = root / "etc/inittab"
    text = inittab.read_text()
    text = re.sub(r"(?m)^([1-6]:\d*:respawn:/sbin/getty.*)$", r"#\1", text)
    text = re.sub(r"(?m)^pf::powerwait:.*$", "pf::powerwait:/sbin/shutdown -h -P now", text)
    text = re.sub(r"(?m)^pn::powerfailnow:.*$", "pn::powerfailnow:/sbin/shutdown -h -P now",
                  text)
    text = re.sub(r"(?m)^(po::powerokwait:.*)$", r"#\1", text)
    inittab.write_text(text)

    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    script = root / "etc/init.d/ssh-hostkeys"
    script.write_text(HOSTKEYS_SCRIPT)
    script.chmod(0o755)
    _run(["chroot", str(root), "update-rc.d", "ssh-hostkeys", "defaults"], "update-rc.d")
    (root / "etc/ssh/sshd_config.d/ve.conf").write_text("PermitRootLogin yes\n")

    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n"
                                    "::1\tlocalhost ip6-localhost ip6-loopback\n")
    (root / "etc/apt/sources.list").write_text(SOURCES)
    _run(["chroot", str(root), "apt-get", "clean"], "apt-get clean")
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/log/*.log",
                    "var/log/apt/*"):
        for path in root.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()


def _run(argv, what):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ResourceError(f"building {NAME}: {what} failed: {exc}") from exc
    if out.returncode:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise ResourceError(f"building {NAME}: {what} failed: " + " / ".join(tail))
    return out.stdout
