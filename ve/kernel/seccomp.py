"""The VE's seccomp filter: a deny list, plus sysinfo(2) and reboot(2) for the node watcher.

One classic BPF program per VE, installed by its init just before exec (and
by every ``exec``/``enter`` command, which does not inherit init's) and so
inherited by every process of the VE. It does three things:

* **Denies the calls the kernel does not namespace** (``ve/syscalls.py``): kernel
  modules, kexec, the keyring, open_by_handle_at, bpf, perf_event_open,
  userfaultfd, io_uring, swap, process accounting, setting the clock, port
  I/O, syslog(2), forced unmounts. Most of them already need a capability in
  the host's user namespace, which VE root never holds; the filter stops them
  before any of the kernel's code for them runs (where the exploits live) and
  also covers a privileged VE (no user namespace). docs/security.md says why
  each is here and why some calls Docker denies are not.
* **Turns sysinfo(2) into a user notification** answered by the node watcher
  from the VE's cgroup: sysinfo cannot be namespaced (it reports the host's
  RAM, swap and uptime; busybox ``free`` and glibc's ``sysconf(_SC_PHYS_PAGES)``
  use it).
* **Turns a halting reboot(2) into a notification** the watcher notes before
  letting it run: inside a PID namespace reboot(2) only kills the
  namespace's init, which a watcher that is not init's parent cannot tell
  from a power-off.

Without a watcher (``notify`` false) the same program lets sysinfo and reboot
run, and is installed without a listener.

Every ABI of x86_64 alike: native, i386 (``int 0x80`` from a 64-bit process
reaches the i386 table) and x32 (native numbers with bit 30 set; x32 is not
built into this kernel, which then answers ENOSYS itself, but the filter does
not rely on that).

Most denied calls answer EPERM (what the kernel says to a caller lacking the
capability). The keyring and io_uring answer ENOSYS, as if the kernel had
been built without them: that is the answer their users test for to fall
back (systemd, pam_keyinit and keyutils treat ENOSYS as "no keyring";
liburing users, libuv and Node.js fall back to threads or epoll), while
EPERM makes some of them fail outright.

A staff member can relax a VE's filter (``VEConfig.seccomp_allow``, ``vectl set
--seccomp-allow``) by naming calls or groups of ``ve.syscalls.RELAXABLE``; the calls
that only harm the host (modules, kexec, open_by_handle_at, swap, clock,
port I/O, ...) cannot be relaxed.
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
UMOUNT2, MNT_FORCE = 166, 1               # i386's umount2 is 52 (its umount, 22, has no flags)
UMOUNT2_I386 = 52
RET_KILL_PROCESS, RET_ERRNO = 0x80000000, 0x00050000
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


_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|..|K


def program(notify, rules):
    """The classic BPF program, as bytes.

    ``notify``: sysinfo and a halting reboot become user notifications (else they
    run); ``rules``: ((ABI column: 0 x86_64, 1 i386, 2 x32; number; errno), ...),
    the calls to deny (``ve.syscalls.rules``).
    For every ABI: the denied calls fail with their errno; umount2 with
    MNT_FORCE fails with EPERM; sysinfo is notified; reboot with a command that
    ends the VE is notified (Ctrl-Alt-Del settings, which inits make at boot,
    run unstopped); the rest is allowed. Only the number and the ABI decide,
    except for reboot and umount2, so the kernel caches "allowed" for every
    other call and runs no filter for it at all (its seccomp action cache).
    """
    notified = "notify" if notify else "allow"
    rebooted = "reboot" if notify else "allow"

    def section(column, tag, sysinfo, reboot, umount2):
        code = [(f"{tag}", _LD, 0, None, None)]                            # A = nr
        if column == 0:
            code.append((None, _JGE, X32_BIT, "x32", None))
        for number, err in [(nr, err) for abi, nr, err in rules if abi == column]:
            code.append((None, _JEQ, number, f"errno{err}", None))
        code += [(None, _JEQ, sysinfo, notified, None),
                 (None, _JEQ, reboot, rebooted, None),
                 (None, _JEQ, umount2, "umount2", "allow")]
        return code

    code = [
        ("start", _LD, 4, None, None),                                     # A = arch
        (None, _JEQ, AUDIT_ARCH_X86_64, "x86_64", None),
        (None, _JEQ, AUDIT_ARCH_I386, "i386", None),
        (None, _RET, RET_KILL_PROCESS, None, None),                        # no other ABI here
        *section(0, "x86_64", SYSINFO, REBOOT, UMOUNT2),
        *section(1, "i386", SYSINFO_I386, REBOOT_I386, UMOUNT2_I386),
        *section(2, "x32", SYSINFO | X32_BIT, REBOOT | X32_BIT, UMOUNT2 | X32_BIT),
        ("umount2", _LD, 24, None, None),                                  # A = flags (args[1])
        (None, _JSET, MNT_FORCE, f"errno{errno.EPERM}", "allow"),
        ("reboot", _LD, 32, None, None),                                   # A = cmd (args[2])
        *[(None, _JEQ, cmd, "notify", None) for cmd in HALTING_COMMANDS],
        ("allow", _RET, RET_ALLOW, None, None),
        ("notify", _RET, RET_USER_NOTIF, None, None),
        *[(f"errno{err}", _RET, RET_ERRNO | err, None, None)
          for err in sorted({err for _, _, err in rules} | {errno.EPERM})],
    ]
    at = {label: index for index, (label, *_) in enumerate(code) if label}

    def offset(index, label):
        if label is None:
            return 0
        jump = at[label] - index - 1
        assert 0 <= jump < 256, f"jump to {label} out of reach"  # forward, 8 bits
        return jump
    return b"".join(struct.pack("=HBBI", op, offset(i, yes), offset(i, no), k)
                    for i, (_, op, k, yes, no) in enumerate(code))


_PROGRAMS = {}


def compiled(notify, rules):
    """``program(notify, rules)``, built once per process."""
    key = (bool(notify), tuple(rules))
    if key not in _PROGRAMS:
        _PROGRAMS[key] = program(*key)
    return _PROGRAMS[key]


def prepare(notify, rules):
    """Build the program now (before a fork), so ``install`` in the child only loads it."""
    compiled(notify, rules)


def install(notify, rules):
    """Install the VE's filter on the calling process.

    Return the listener fd (close-on-exec) if ``notify``, else None. Needs
    CAP_SYS_ADMIN in the caller's user namespace (a VE's init before it
    execs, as VE root) or no_new_privs.
    """
    code = compiled(notify, rules)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("=H6xQ", len(code) // 8, ctypes.addressof(buf))
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER if notify else 0
    fd = _libc.syscall(ctypes.c_long(SYS_SECCOMP), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                       ctypes.c_uint(flags), ctypes.c_char_p(fprog))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter: {os.strerror(err)}")
    return fd if notify else None


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
