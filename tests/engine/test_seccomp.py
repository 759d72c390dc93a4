"""The VE's seccomp program, tried on this kernel in a forked child (no VE needed).

The child sets no_new_privs, installs the program and makes each call with
arguments the kernel would refuse with another errno (or accept) if the
filter let it through; the errno seen tells that the filter answered.
tests/security/test_seccomp_escape.py tries the same from inside real VEs,
on the i386 and x32 entries too.
"""

import ctypes
import errno
import os

import pytest

from ve import syscalls
from ve.config import VEConfig, dumps, loads
from ve.errors import InvalidConfig
from ve.kernel import libc, seccomp

_libc = ctypes.CDLL(None, use_errno=True)


def _call(nr, *args):
    result = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return 0 if result >= 0 else ctypes.get_errno()


def _in_filtered_child(calls, notify=False, allow=()):
    """Return {name: errno} of ``calls`` (name -> (nr, args)) made under the filter."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
            listener = seccomp.install(notify, syscalls.rules(allow))
            if listener is not None:
                os.close(listener)
            text = "\n".join(f"{name} {_call(nr, *args)}" for name, (nr, args) in calls.items())
            os.write(write_end, text.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return {name: int(err) for name, err in (line.rsplit(None, 1) for line in out.splitlines())}


# Harmless arguments: an unfiltered host root gets another answer for each.
HARMLESS = {
    "keyctl": (250, (0, -3, 0)),         # KEYCTL_GET_KEYRING_ID: succeeds
    "add_key": (248, (0, 0, 0, 0, 0)),   # NULL type: EFAULT
    "bpf": (321, (-1, 0, 0)),            # bad command: EINVAL
    "perf_event_open": (298, (0, 0, -1, -1, 0)),  # NULL attr: EFAULT
    "io_uring_setup": (425, (0, 0)),     # 0 entries: EINVAL
    "userfaultfd": (323, (-1,)),         # bad flags: EINVAL
    "open_by_handle_at": (304, (-1, 0, 0)),  # bad fd: EBADF
    "swapoff": (168, (0,)),              # NULL path: EFAULT
    "syslog": (103, (10,)),              # SYSLOG_ACTION_SIZE_BUFFER: succeeds
    "umount2 force": (166, (0, 1)),      # NULL path: EFAULT
    "umount2": (166, (0, 0)),            # NULL path: EFAULT
    "getpid": (39, ()),
}


def test_host_root_gets_other_answers_without_the_filter():
    """The probes below would not answer EPERM/ENOSYS if the filter let them through."""
    unfiltered = {name: _call(nr, *args) for name, (nr, args) in HARMLESS.items()}
    assert not {errno.EPERM, errno.ENOSYS} & set(unfiltered.values()), unfiltered


def test_the_filter_answers_denied_calls_and_lets_the_rest_run():
    seen = _in_filtered_child(HARMLESS)
    assert seen == {"keyctl": errno.ENOSYS, "add_key": errno.ENOSYS, "bpf": errno.EPERM,
                    "perf_event_open": errno.EPERM, "io_uring_setup": errno.ENOSYS,
                    "userfaultfd": errno.EPERM, "open_by_handle_at": errno.EPERM,
                    "swapoff": errno.EPERM, "syslog": errno.EPERM,
                    "umount2 force": errno.EPERM, "umount2": errno.EFAULT, "getpid": 0}


def test_x32_numbers_are_denied_too():
    x32 = {name: (nr | syscalls.X32_BIT, args) for name, (nr, args) in HARMLESS.items()
           if name in ("keyctl", "bpf", "open_by_handle_at", "umount2 force")}
    x32["kexec_load"] = (528 | syscalls.X32_BIT, (0, 0, 0, 0))
    seen = _in_filtered_child(x32)
    assert seen == {"keyctl": errno.ENOSYS, "bpf": errno.EPERM,
                    "open_by_handle_at": errno.EPERM, "umount2 force": errno.EPERM,
                    "kexec_load": errno.EPERM}


def test_relaxed_groups_run_and_the_rest_stays_denied():
    allow = syscalls.allow_names(["keyring", "bpf"])
    assert allow == ("add_key", "bpf", "keyctl", "request_key")
    seen = _in_filtered_child(HARMLESS, allow=allow)
    assert seen["keyctl"] == 0 and seen["add_key"] == errno.EFAULT
    assert seen["bpf"] == errno.EINVAL
    assert seen["perf_event_open"] == errno.EPERM and seen["swapoff"] == errno.EPERM


def test_without_a_watcher_sysinfo_and_reboot_run():
    seen = _in_filtered_child({"sysinfo": (99, (0,)), "reboot": (169, (0, 0, 0, 0))})
    assert seen == {"sysinfo": errno.EFAULT, "reboot": errno.EINVAL}


def test_program_is_valid_for_every_relaxation():
    for group in [*syscalls.RELAXABLE, *[()]]:
        for notify in (True, False):
            code = seccomp.program(notify, syscalls.rules(syscalls.RELAXABLE.get(group, ())))
            assert len(code) % 8 == 0 and len(code) // 8 < 4096


@pytest.mark.parametrize("value, expected", [
    ("", ()), ("none", ()), ("keyring", ("add_key", "keyctl", "request_key")),
    ("io_uring,perf", ("io_uring_enter", "io_uring_register", "io_uring_setup",
                       "perf_event_open")),
    (("bpf", "keyctl"), ("bpf", "keyctl")),
])
def test_seccomp_allow_is_checked_and_saved(value, expected):
    cfg = VEConfig(101, "web1", "busybox", seccomp_allow=value)
    assert cfg.seccomp_allow == expected
    assert loads(dumps(cfg)) == cfg


@pytest.mark.parametrize("value", ["kexec_load", "init_module", "open_by_handle_at", "swapon",
                                   "umount_force", "clock_settime", "everything", "keyring;x"])
def test_seccomp_allow_refuses_what_harms_the_host(value):
    with pytest.raises(InvalidConfig):
        VEConfig(101, "web1", "busybox", seccomp_allow=value)
