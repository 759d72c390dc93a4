"""The VE's seccomp notifier: sysinfo(2) and reboot(2) answered or noted by the node watcher.

sysinfo(2) cannot be namespaced (it reports the host's RAM, swap and uptime;
busybox ``free`` and glibc's ``sysconf(_SC_PHYS_PAGES)`` use it), and
reboot(2) inside a PID namespace only kills the namespace's init, which a
watcher that is not init's parent cannot tell from a power-off. A VE's init
installs, just before exec, a filter that turns these two calls into user
notifications (inherited by every process of the VE); the listener goes to
the node watcher, which answers sysinfo from the VE's cgroup and notes
reboot's command before letting it run.

x86_64 only (the numbers below); i386 and x32 entries are caught too, so a
VE cannot slip past with the other ABIs.
"""

import ctypes
import errno
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)

SYS_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_BIT = 0x40000000
SYSINFO, REBOOT = 99, 169                 # x86_64 (x32: the same | X32_BIT)
SYSINFO_I386, REBOOT_I386 = 116, 88
RET_ALLOW, RET_USER_NOTIF = 0x7FFF0000, 0x7FC00000
# reboot(2) commands that end the VE: RESTART, RESTART2, POWER_OFF, HALT
HALTING_COMMANDS = (0x01234567, 0xA1B2C3D4, 0x4321FEDC, 0xCDEF0123)

IOCTL_RECV, IOCTL_SEND, IOCTL_ID_VALID = 0xC0502100, 0xC0182101, 0x40082102
FLAG_CONTINUE = 1

# struct seccomp_notif: id, pid, flags, then seccomp_data (nr, arch, ip, args[6])
NOTIF = struct.Struct("=QIIiIQ6Q")
RESP = struct.Struct("=QqiI")            # id, val, error, flags
# struct sysinfo (x86_64): uptime, loads[3], ram/free/shared/buffer, swap/free, procs, high, unit
SYSINFO_STRUCT = struct.Struct("=q3Q6QH6xQQI4x")

_LD, _JEQ, _RET = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K


class Notification(tuple):
    """One intercepted call: (id, pid, nr, arch, args)."""

    __slots__ = ()
    id = property(lambda self: self[0])
    pid = property(lambda self: self[1])
    nr = property(lambda self: self[2])
    arch = property(lambda self: self[3])
    args = property(lambda self: self[4])

    @property
    def call(self):
        """"sysinfo", "reboot", or None."""
        native = self.nr & ~X32_BIT if self.arch == AUDIT_ARCH_X86_64 else None
        if native == SYSINFO or (self.arch == AUDIT_ARCH_I386 and self.nr == SYSINFO_I386):
            return "sysinfo"
        if native == REBOOT or (self.arch == AUDIT_ARCH_I386 and self.nr == REBOOT_I386):
            return "reboot"
        return None


def _program():
    """The classic BPF program: notify on sysinfo, and on reboot with a command that ends
    the VE (Ctrl-Alt-Del settings, which inits make at boot, run unstopped); allow
    the rest. Every ABI alike."""
    # (label, opcode, k, label if true, label if false); None falls through.
    code = [
        ("start", _LD, 4, None, None),                                # A = arch
        (None, _JEQ, AUDIT_ARCH_X86_64, None, "i386"),
        (None, _LD, 0, None, None),                                   # A = nr
        (None, _JEQ, SYSINFO, "notify", None),
        (None, _JEQ, SYSINFO | X32_BIT, "notify", None),
        (None, _JEQ, REBOOT, "reboot", None),
        (None, _JEQ, REBOOT | X32_BIT, "reboot", None),
        (None, _RET, RET_ALLOW, None, None),
        ("i386", _JEQ, AUDIT_ARCH_I386, None, "allow"),
        (None, _LD, 0, None, None),
        (None, _JEQ, SYSINFO_I386, "notify", None),
        (None, _JEQ, REBOOT_I386, "reboot", "allow"),
        ("reboot", _LD, 32, None, None),                              # A = cmd (args[2])
        *[(None, _JEQ, cmd, "notify", None) for cmd in HALTING_COMMANDS],
        ("allow", _RET, RET_ALLOW, None, None),
        ("notify", _RET, RET_USER_NOTIF, None, None),
    ]
    at = {label: index for index, (label, *_) in enumerate(code) if label}

    def offset(index, label):
        return 0 if label is None else at[label] - index - 1  # forward jumps only
    return b"".join(struct.pack("=HBBI", op, offset(i, yes), offset(i, no), k)
                    for i, (_, op, k, yes, no) in enumerate(code))


_PROGRAM = _program()


def install_notifier():
    """Install the filter on the calling process; return the listener fd (close-on-exec).

    Needs CAP_SYS_ADMIN in the caller's user namespace (a VE's init before it
    execs, as VE root) or no_new_privs.
    """
    buf = ctypes.create_string_buffer(_PROGRAM, len(_PROGRAM))
    fprog = struct.pack("=H6xQ", len(_PROGRAM) // 8, ctypes.addressof(buf))
    fd = _libc.syscall(ctypes.c_long(SYS_SECCOMP), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                       ctypes.c_uint(SECCOMP_FILTER_FLAG_NEW_LISTENER), ctypes.c_char_p(fprog))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp notifier: {os.strerror(err)}")
    return fd


def receive(listener):
    """Return the next Notification on ``listener``, or None if it went away meanwhile."""
    buf = bytearray(NOTIF.size)  # the kernel wants it zeroed
    try:
        _ioctl(listener, IOCTL_RECV, buf)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EINTR):
            return None
        raise
    nid, pid, _, nr, arch, _, *args = NOTIF.unpack(buf)
    return Notification((nid, pid, nr, arch, tuple(args)))


def still_valid(listener, nid):
    """True while notification ``nid`` still waits (its caller was not killed meanwhile)."""
    try:
        _ioctl(listener, IOCTL_ID_VALID, bytearray(struct.pack("=Q", nid)))
        return True
    except OSError:
        return False


def answer(listener, nid, value=0, error=0):
    """Complete the call: it returns ``value``, or fails with errno ``error``."""
    _send(listener, RESP.pack(nid, value, -error if error else 0, 0))


def let_through(listener, nid):
    """Let the call run in the kernel as if no filter had stopped it."""
    _send(listener, RESP.pack(nid, 0, 0, FLAG_CONTINUE))


def _send(listener, packed):
    try:
        _ioctl(listener, IOCTL_SEND, bytearray(packed))
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINPROGRESS):  # the caller is gone
            raise


def _ioctl(fd, request, buf):
    import fcntl
    fcntl.ioctl(fd, request, buf, True)


def sysinfo_bytes(uptime, loads, totalram, freeram, sharedram, bufferram, totalswap, freeswap,
                  procs):
    """struct sysinfo (x86_64) with byte units; loads as floats (1.0 = one runnable task)."""
    scaled = [min(int(load * 65536), 2**64 - 1) for load in loads]
    return SYSINFO_STRUCT.pack(int(uptime), *scaled, totalram, freeram, sharedram, bufferram,
                               totalswap, freeswap, min(procs, 0xFFFF), 0, 0, 1)


def write_answer(listener, note, data):
    """Write ``data`` at the caller's pointer argument, then answer 0.

    /proc/PID/mem is opened first and the notification checked afterwards: a
    PID reused by another process in between fails that check, so nothing is
    written anywhere but into the waiting caller.
    """
    try:
        fd = os.open(f"/proc/{note.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return let_through(listener, note.id)
    try:
        if not still_valid(listener, note.id):
            return None
        written = os.pwrite(fd, data, note.args[0])
    except OSError:
        return answer(listener, note.id, error=errno.EFAULT)
    finally:
        os.close(fd)
    if written != len(data):
        return answer(listener, note.id, error=errno.EFAULT)
    return answer(listener, note.id)
