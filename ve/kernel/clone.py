"""fork() straight into a cgroup v2 group: clone3 with CLONE_INTO_CGROUP.

Moving a running process into a v2 group (writing cgroup.procs) takes the
kernel's global threadgroup lock and waits an RCU grace period, 5-20 ms; a
child created inside the group never moves. Python has no clone3, so this
calls the syscall with the same before/after-fork hooks ``os.fork`` runs.
"""

import ctypes
import os

# PyDLL keeps the GIL held across the call, as the fork hooks require.
_libc = ctypes.PyDLL(None, use_errno=True)
_api = ctypes.pythonapi
_SYS_CLONE3 = 435  # x86_64
_CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
        "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]


def fork_into_cgroup(group_dir):
    """Fork like ``os.fork`` with the child born in v2 group ``group_dir``.

    Returns 0 in the child and the child's PID in the parent; ``group_dir``
    None means a plain ``os.fork()``.
    """
    if group_dir is None:
        return os.fork()
    dirfd = os.open(group_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    args = _CloneArgs(flags=_CLONE_INTO_CGROUP, exit_signal=_SIGCHLD, cgroup=dirfd)
    _api.PyOS_BeforeFork()
    pid = _libc.syscall(ctypes.c_long(_SYS_CLONE3), ctypes.byref(args),
                        ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        _api.PyOS_AfterFork_Child()
    else:
        err = ctypes.get_errno()
        _api.PyOS_AfterFork_Parent()
    os.close(dirfd)
    if pid < 0:
        raise OSError(err, f"clone3 into {group_dir}: {os.strerror(err)}")
    return pid
