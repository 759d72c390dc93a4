"""The busybox template's root filesystem, written straight into a tarball.

The tree is described in memory and streamed into the archive rather than
staged in a temp directory: every entry then gets uid/gid 0, a fixed mtime
and an exact mode regardless of the host's umask or filesystem, so two builds
are byte-identical, and no half-built tree is ever left on disk.
"""

import gzip
import io
import posixpath
import tarfile

EPOCH = 946684800  # 2000-01-01T00:00:00Z: the mtime of every entry
BUSYBOX = "bin/busybox"
APPLET_DIRS = frozenset({"bin", "sbin", "usr/bin", "usr/sbin"})

DIRS = {
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "etc/init.d": 0o755, "home": 0o755,
    "mnt": 0o755, "proc": 0o555, "root": 0o700, "run": 0o755, "sbin": 0o755,
    "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
    "var": 0o755, "var/log": 0o755,
}

# busybox init runs rcS, keeps a login prompt on the console and otherwise
# waits for signals (SIGUSR2 = poweroff).
INITTAB = """\
::sysinit:/etc/init.d/rcS
::once:/etc/init.d/console
::shutdown:/bin/umount -a -r
"""

# A login prompt on the console, again after each logout, where the node gave the
# VE a console terminal. Where it did not (/dev/console is /dev/null) it ends at
# once and leaves no process ("once": init does not start it again). The pause
# keeps a console whose terminal went away from spinning.
CONSOLE = """\
#!/bin/sh
[ -t 0 ] || exit 0
while :; do
    /sbin/getty -L 0 console vt100
    sleep 1
done
"""

# The engine mounts /proc, /sys and /dev and sets the hostname before init
# runs, so rcS mounts nothing and leaves the hostname alone.
RCS = """\
#!/bin/sh
mkdir -p /tmp /run /var/log
chmod 1777 /tmp
[ -x /etc/rc.local ] && /etc/rc.local
exit 0
"""

FILES = {
    "etc/init.d/rcS": (0o755, RCS),
    "etc/init.d/console": (0o755, CONSOLE),
    "etc/inittab": (0o644, INITTAB),
    "etc/passwd": (0o644, "root:x:0:0:root:/root:/bin/sh\n"
                          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
    "etc/group": (0o644, "root:x:0:\nnogroup:x:65534:\n"),
    # "!" locks the password: log in with `vectl enter`, or set one with passwd.
    "etc/shadow": (0o600, "root:!::0:99999:7:::\nnobody:!::0:99999:7:::\n"),
    "etc/hostname": (0o644, "localhost\n"),
    "etc/hosts": (0o644, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    "etc/profile": (0o644, "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
                           "export PS1='\\h:\\w\\$ '\numask 022\n"),
}


def applet_links(applets):
    """Map each applet path (``usr/bin/ar``) to its relative symlink to busybox.

    Paths outside the usual bin directories (``linuxrc``) and busybox itself
    are left out; ``sbin/init`` is always included.
    """
    links = {}
    for path in set(applets) | {"sbin/init"}:
        if posixpath.dirname(path) in APPLET_DIRS and path != BUSYBOX:
            links[path] = posixpath.relpath(BUSYBOX, posixpath.dirname(path))
    return links


def entries(binary, applets):
    """Return the sorted ``(TarInfo, data)`` entries of the busybox rootfs."""
    items = [_entry(name, tarfile.DIRTYPE, mode) for name, mode in DIRS.items()]
    items.append(_entry(BUSYBOX, tarfile.REGTYPE, 0o755, data=binary))
    items += [_entry(name, tarfile.REGTYPE, mode, data=text.encode())
              for name, (mode, text) in FILES.items()]
    items += [_entry(name, tarfile.SYMTYPE, 0o777, link=target)
              for name, target in applet_links(applets).items()]
    return sorted(items, key=lambda item: item[0].name)


def _entry(name, kind, mode, data=None, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = EPOCH
    info.size = len(data) if data is not None else 0
    return info, data


def write_tar_gz(out, items):
    """Write ``items`` to the binary file ``out`` as a reproducible .tar.gz."""
    # No file name and a zero mtime in the gzip header keep the bytes stable.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for info, data in items:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
