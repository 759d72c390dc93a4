"""Build the ``debian-12`` and ``debian-13`` OS templates with debootstrap.

The VE boots Debian's own init, systemd, and starts sshd as a unit. systemd
gets a cgroup2 tree of its own (``cgroup2`` in the template's metadata: the
engine mounts the VE's group at /sys/fs/cgroup and delegates it to VE root),
and the template stops on systemd's poweroff signal, SIGRTMIN+4. The rootfs is
adjusted for life in a VE:

- console-getty.service (systemd adds it in containers: a login prompt on
  /dev/console) only where the engine gave the VE a console terminal (it then
  puts /dev/.console-tty beside it): on /dev/null agetty would fail;
- logind, hostnamed, localed and timedated kept in the VE's namespaces (a
  drop-in each, ``NAMESPACED_UNITS``), so a VE can be checkpointed and moved
  live;
- an empty /etc/machine-id: systemd makes each VE its own at its first boot
  (empty, not missing: a missing one would mean "first boot", which turns on
  every unit of the distribution's presets, such as systemd-networkd);
- no SSH host keys in the template: each VE makes its own before sshd starts
  (``ssh-hostkeys.service``, whenever a key is missing); root may log in with
  a password (written into the VE at create or reinstall) or a key;
- nothing of the build host: no /etc/hostname (the engine sets the name),
  empty resolv.conf and a localhost-only /etc/hosts (the engine writes both
  when the VE has addresses), no apt lists or logs.

Every command runs with an argument list; the rootfs is written by Python,
then packed by tar and imported like any tarball (checked member by member).
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ResourceError, Unsupported
from . import templates

RELEASES = {"debian-12": ("bookworm", "12"), "debian-13": ("trixie", "13")}
MIRROR_ENV = "VE_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# dbus and libpam-systemd: logind (sessions for SSH logins) needs both.
PACKAGES = ("systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "iproute2", "procps",
            "iputils-ping", "less", "ca-certificates")
STOP_SIGNAL = "SIGRTMIN+4"  # systemd's poweroff.target
MASKED = ()  # units that never run in a VE
CONDITIONS = {"console-getty.service": "[Unit]\nConditionPathExists=/dev/.console-tty\n"}
# Debian's own daemons that sandbox themselves in namespaces of their own
# (ProtectHostname= makes a UTS namespace, PrivateNetwork= a network one,
# PrivateTmp=, ProtectSystem=, ReadOnlyPaths= and the like a mount namespace):
# CRIU cannot save a namespace nested in the VE, so a VE running one could only
# move offline. logind runs all the time; the others start on demand
# (hostnamectl, localectl, timedatectl) and exit when idle. Their drop-in turns
# off those settings only: the VE is their sandbox already (its own namespaces,
# no host capability), and their seccomp filter, capability set and the rest of
# their hardening stay.
NAMESPACED_UNITS = ("systemd-logind.service", "systemd-hostnamed.service",
                    "systemd-localed.service", "systemd-timedated.service")
# systemd 254 and later watch memory pressure through a trigger written into a PSI
# file (memory.pressure); CRIU restores the file but not the trigger, and polling
# it then reports an error at once, for ever: every daemon of a restored VE spun
# and systemd stopped running jobs. Off for the managers' services (PID 1 has
# MEMORY_PRESSURE_WATCH=/dev/null in its environment, ve/engine/lifecycle.py);
# what it costs is daemons not flushing their caches early under memory pressure.
PRESSURE_WATCH_VERSION = 13  # the first of our releases with such a systemd (257)
NO_PRESSURE_WATCH = """# Written by the VE template: a restored VE cannot keep memory pressure
# triggers (docs/engine.md).
[Manager]
DefaultMemoryPressureWatch=off
"""
# A user manager (an SSH login starts root's) is given no MEMORY_PRESSURE_WATCH by the
# setting above and then watches its own cgroup's: a restored one spun, and a stop of
# the VE waited for it until killed.
USER_MANAGER_NO_PRESSURE_WATCH = """# Written by the VE template: a restored VE cannot keep
# memory pressure triggers (docs/engine.md).
[Service]
Environment=MEMORY_PRESSURE_WATCH=/dev/null
"""
MIGRATABLE_DROPIN = """# Written by the VE template: keeps this unit in the VE's own namespaces so
# that the VE can be checkpointed and moved live (docs/engine.md).
[Service]
ProtectHostname=no
PrivateNetwork=no
PrivateIPC=no
PrivateUsers=no
PrivateMounts=no
PrivateTmp=no
PrivateDevices=no
ProtectSystem=no
ProtectHome=no
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectProc=default
ProcSubset=all
ReadWritePaths=
ReadOnlyPaths=
InaccessiblePaths=
BindPaths=
BindReadOnlyPaths=
"""

UNITS = "etc/systemd/system"
HOSTKEYS_UNIT = """[Unit]
Description=Make this VE's own SSH host keys
ConditionPathExists=|!/etc/ssh/ssh_host_ed25519_key
ConditionPathExists=|!/etc/ssh/ssh_host_ecdsa_key
ConditionPathExists=|!/etc/ssh/ssh_host_rsa_key
# Debian 13's first-boot unit does the same: never both at once.
After=sshd-keygen.service
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""
SOURCES = """deb {mirror} {suite} main
deb {mirror} {suite}-updates main
deb http://deb.debian.org/debian-security {suite}-security main
"""


def build_debian(cache_dir, name="debian-12", mirror=None):
    """Build template ``name`` (a key of RELEASES) into ``cache_dir``; return the tarball path.

    Takes about a minute with a nearby mirror (``$VE_DEBIAN_MIRROR``, default
    deb.debian.org). Raise Unsupported without debootstrap, ResourceError if
    a step fails; nothing is left behind either way.
    """
    suite, version = RELEASES[name]
    if shutil.which("debootstrap") is None:
        raise Unsupported(f"building {name} needs debootstrap (apt-get install debootstrap)")
    mirror = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    cache_dir = Path(cache_dir)
    templates.make_cache_dir(cache_dir)
    work = Path(tempfile.mkdtemp(prefix=".build-debian-", dir=cache_dir))  # 0700, dot-named
    try:
        root = work / "rootfs"
        # In a mount namespace of its own: the /proc and /sys it mounts in the
        # rootfs vanish with it, even if it is killed (a timeout) mid-way.
        _run(name, ["unshare", "--mount", "--propagation", "private",
                    "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                    suite, str(root), mirror], "debootstrap")
        _adjust(name, root, suite)
        arch = _run(name, ["chroot", str(root), "dpkg", "--print-architecture"], "dpkg").strip()
        tarball = work / "rootfs.tar.gz"
        _run(name, ["tar", "-C", str(root), "--numeric-owner", "-czf", str(tarball), "."], "tar")
        return templates.import_tarball(
            cache_dir, name, tarball, distribution="debian", version=version,
            init=("/sbin/init",), stop_signal=STOP_SIGNAL, arch=arch, services=("ssh",),
            cgroup2=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _adjust(name, root, suite):
    for unit in MASKED:
        _link(root / UNITS / unit, "/dev/null")
    for unit, dropin in CONDITIONS.items():
        (root / UNITS / f"{unit}.d").mkdir(exist_ok=True)
        (root / UNITS / f"{unit}.d" / "zz-ve-console.conf").write_text(dropin)
    for unit in NAMESPACED_UNITS:
        dropins = root / UNITS / f"{unit}.d"
        dropins.mkdir(exist_ok=True)
        # Last of the unit's drop-ins, Debian's own included (they apply in name order).
        (dropins / "zz-ve-migratable.conf").write_text(MIGRATABLE_DROPIN)
    if int(RELEASES[name][1]) >= PRESSURE_WATCH_VERSION:  # older ones do not know the key
        for manager in ("system", "user"):
            conf = root / "etc/systemd" / f"{manager}.conf.d"
            conf.mkdir(exist_ok=True)
            (conf / "zz-ve-migratable.conf").write_text(NO_PRESSURE_WATCH)
        dropins = root / UNITS / "user@.service.d"
        dropins.mkdir(exist_ok=True)
        (dropins / "zz-ve-migratable.conf").write_text(USER_MANAGER_NO_PRESSURE_WATCH)
    (root / "etc/machine-id").write_text("")
    # dbus reads its own copy first: one shared by every VE would not do.
    _link(root / "var/lib/dbus/machine-id", "/etc/machine-id")

    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / UNITS / "ssh-hostkeys.service").write_text(HOSTKEYS_UNIT)
    (root / UNITS / "ssh.service.wants").mkdir(exist_ok=True)
    _link(root / UNITS / "ssh.service.wants/ssh-hostkeys.service",
          "/etc/systemd/system/ssh-hostkeys.service")
    (root / "etc/ssh/sshd_config.d/ve.conf").write_text("PermitRootLogin yes\n")

    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n"
                                    "::1\tlocalhost ip6-localhost ip6-loopback\n")
    (root / "etc/apt/sources.list").write_text(SOURCES.format(mirror=DEFAULT_MIRROR,
                                                              suite=suite))
    _run(name, ["chroot", str(root), "apt-get", "clean"], "apt-get clean")
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/log/*.log",
                    "var/log/apt/*"):
        for path in root.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()


def _link(path, target):
    """Make ``path`` a symlink to ``target``, replacing whatever is there."""
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def _run(name, argv, what):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ResourceError(f"building {name}: {what} failed: {exc}") from exc
    if out.returncode:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise ResourceError(f"building {name}: {what} failed: " + " / ".join(tail))
    return out.stdout
