"""Thin ctypes wrappers for the syscalls Python 3.11 lacks.

Each wrapper raises ``OSError`` with errno and a short context, like the
``os`` module does. (``os.unshare``/``os.setns`` arrive only in 3.12.)
"""

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38

_SYS_CLOSE_RANGE = 436


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags):
    """Move the calling process into new namespaces."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd, flags):
    """Join the namespaces of ``fd`` (a namespace file or a pidfd)."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(flags)), "setns")


def mount(source, target, fstype, flags=0, data=None):
    """mount(2) with str arguments (None where unused)."""
    enc = lambda s: None if s is None else os.fsencode(s)
    result = _libc.mount(enc(source), enc(target), enc(fstype),
                         ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {target}")


def umount2(target, flags=0):
    """umount2(2)."""
    _check(_libc.umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}")


def syncfs(fd):
    """syncfs(2): write out the filesystem that ``fd`` is on."""
    _check(_libc.syncfs(ctypes.c_int(fd)), "syncfs")


def sethostname(name):
    """sethostname(2) in the current UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def prctl(option, arg2=0):
    """prctl(2) with one argument."""
    result = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2),
                         ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    _check(result, f"prctl {option}")


def set_name(name):
    """Set the calling thread's name (its comm, what ps shows)."""
    _check(_libc.prctl(ctypes.c_int(PR_SET_NAME), ctypes.c_char_p(name.encode()[:15]),
                       ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl name")


def close_fds_from(first):
    """Close every descriptor >= ``first`` (close_range, else a loop)."""
    result = _libc.syscall(ctypes.c_long(_SYS_CLOSE_RANGE), ctypes.c_uint(first),
                           ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(0))
    if result != 0:
        os.closerange(first, os.sysconf("SC_OPEN_MAX"))


_SYS_KEYCTL = 250
_KEYCTL_JOIN_SESSION_KEYRING = 1


def join_new_session_keyring():
    """Replace the session keyring with a new anonymous one.

    A forked process shares its parent's session keyring; without this, VE
    processes would possess the host caller's keys.
    """
    result = _libc.syscall(ctypes.c_long(_SYS_KEYCTL),
                           ctypes.c_int(_KEYCTL_JOIN_SESSION_KEYRING), None)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"keyctl join: {os.strerror(err)}")
