"""The network namespaces a VE made inside its own, found from its processes.

A namespace lives while a process is in it, a file of it is open, or it is
bind-mounted (``ip netns add``, ``unshare --net=FILE``). ``discover`` looks
at all three for the VE's processes: /proc/PID/ns/net, the fds in
/proc/PID/fd that read ``net:[INODE]``, and the nsfs mounts of each mount
namespace in /proc/PID/mountinfo. It only reads links and text; ``open_netns``
opens one namespace, and only after checking it is the one named.

A mount point is a path the VE controls, and it may swap it for a symlink or
a FIFO between our read of mountinfo and the open: the path is resolved
below the process's root (openat2 RESOLVE_IN_ROOT, no magic links), opened
O_PATH|O_NOFOLLOW (nothing is opened for reading, nothing blocks, a symlink
is not followed) and accepted only as an nsfs file of exactly the inode
mountinfo named. A namespace is accepted only if the VE's user namespace
owns it (or one nested in it): a process caught mid-way into the VE, still
in a host namespace, does not make the host's devices the VE's.
"""

import errno
import fcntl
import os
import re
import stat

from ..kernel import vefiles

NS_GET_USERNS, NS_GET_PARENT = 0xB701, 0xB702  # _IO(0xb7, 1), _IO(0xb7, 2)
MAX_USERNS_DEPTH = 33  # the kernel nests user namespaces 32 deep
MOUNTINFO_LIMIT = 16 << 20
_OCTAL = re.compile(rb"[0-7]{3}")


def discover(pids):
    """{inode: source} of every network namespace the processes ``pids`` are in,
    hold open, or see bind-mounted; a source is what ``open_netns`` takes."""
    found, mount_spaces = {}, set()
    for pid in pids:
        inode = _net_inode(f"/proc/{pid}/ns/net")
        if inode is None:
            continue  # gone meanwhile
        found.setdefault(inode, ("ns", pid))
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            inode = _net_inode(f"/proc/{pid}/fd/{fd}")
            if inode is not None:
                found.setdefault(inode, ("fd", pid, fd))
        try:
            mount_ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            continue
        if mount_ns in mount_spaces:
            continue  # its mounts were read from another process already
        mount_spaces.add(mount_ns)
        for inode, point in nsfs_mounts(_read(f"/proc/{pid}/mountinfo")):
            found.setdefault(inode, ("mount", pid, point))
    return found


def nsfs_mounts(text):
    """(inode, mount point) of each network namespace bind-mounted in ``text``
    (a /proc/PID/mountinfo)."""
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)  # after the optional fields
        except ValueError:
            continue
        if len(fields) > dash + 1 and fields[dash + 1] == "nsfs":
            inode = _inode_of(fields[3])
            if inode is not None:
                yield inode, _unescape(fields[4])


def open_netns(source, inode):
    """An fd (O_RDONLY, for setns) of network namespace ``inode`` through
    ``source``; None if it is not (or no longer) that namespace."""
    try:
        if source[0] == "mount":
            root = os.open(f"/proc/{source[1]}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                path_fd = vefiles.open_in_root(source[2], os.O_PATH | os.O_NOFOLLOW, root=root)
            finally:
                os.close(root)
        else:  # links the kernel makes: following them is what they are for
            path = f"/proc/{source[1]}/ns/net" if source[0] == "ns" else \
                f"/proc/{source[1]}/fd/{source[2]}"
            path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(path_fd)
        if not (stat.S_ISREG(st.st_mode) and st.st_dev == _nsfs_dev() and st.st_ino == inode):
            return None
        # The namespace itself (not a path): reopened through our own fd table.
        return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(path_fd)


def owned_by(netns_fd, userns_inode):
    """True if the user namespace ``userns_inode`` owns the network namespace
    ``netns_fd``, directly or through user namespaces nested in it."""
    try:
        user = fcntl.ioctl(netns_fd, NS_GET_USERNS)
    except OSError:
        return False
    try:
        for _ in range(MAX_USERNS_DEPTH):
            if os.fstat(user).st_ino == userns_inode:
                return True
            try:
                parent = fcntl.ioctl(user, NS_GET_PARENT)
            except OSError as exc:
                if exc.errno == errno.EPERM:  # the top (ours): not below the VE's
                    return False
                raise
            os.close(user)
            user = parent
        return False
    finally:
        os.close(user)


def userns_of(netns_fd):
    """The inode of the user namespace owning network namespace ``netns_fd``."""
    user = fcntl.ioctl(netns_fd, NS_GET_USERNS)
    try:
        return os.fstat(user).st_ino
    finally:
        os.close(user)


def inode_of(path):
    return os.stat(path).st_ino


def _nsfs_dev():
    return os.stat("/proc/self/ns/net").st_dev


def _net_inode(link):
    try:
        return _inode_of(os.readlink(link))
    except OSError:
        return None


def _inode_of(name):
    """4026532000 from "net:[4026532000]"; None for anything else."""
    if not (name.startswith("net:[") and name.endswith("]")):
        return None
    digits = name[5:-1]
    return int(digits) if digits.isdigit() and digits.isascii() else None


def _unescape(path):
    r"""A mountinfo path as it is: the kernel writes space, tab, newline and
    backslash as \ooo."""
    out, i = bytearray(), 0
    raw = path.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i] == 0x5C and _OCTAL.fullmatch(raw[i + 1:i + 4]):
            out.append(int(raw[i + 1:i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read(MOUNTINFO_LIMIT).decode("utf-8", "surrogateescape")
    except OSError:
        return ""
