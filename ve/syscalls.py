"""Which system calls a VE's seccomp filter denies, and which staff may relax (pure data).

The kernel layer (``ve/kernel/seccomp.py``) builds the BPF program from the
primitive rules ``rules()`` returns; the config checks relaxations with
``allow_names`` (this module imports nothing, so the dashboard may too).
docs/security.md says why each call is here, why some that Docker denies are
not, and why the keyring and io_uring answer ENOSYS rather than EPERM.
"""

import errno

X86_64, I386, X32 = 0, 1, 2  # ABI columns of ``rules``
X32_BIT = 0x40000000

# name -> (x86_64 number or None, i386 number or None, errno, group it is relaxed by or None)
# (numbers from the kernel's syscall_64.tbl and syscall_32.tbl; x32 uses x86_64's | X32_BIT,
# except kexec_load, which x32 has at 528)
E, N = errno.EPERM, errno.ENOSYS
DENIED = {
    # loading code into the host's kernel
    "init_module": (175, 128, E, None),
    "finit_module": (313, 350, E, None),
    "delete_module": (176, 129, E, None),
    "kexec_load": (246, 283, E, None),
    "kexec_file_load": (320, None, E, None),
    # the keyring is shared with the host: keys are not namespaced, request_key
    # runs the host's /sbin/request-key as host root, quotas are per host uid
    "add_key": (248, 286, N, "keyring"),
    "request_key": (249, 287, N, "keyring"),
    "keyctl": (250, 288, N, "keyring"),
    # any file of the filesystem by its handle, outside the VE's root (Shocker)
    "open_by_handle_at": (304, 342, E, None),
    # kernel-wide tracing and programs; huge attack surfaces
    "bpf": (321, 357, E, "bpf"),
    "perf_event_open": (298, 336, E, "perf"),
    "userfaultfd": (323, 374, E, "userfaultfd"),
    "io_uring_setup": (425, 425, N, "io_uring"),
    "io_uring_enter": (426, 426, N, "io_uring"),
    "io_uring_register": (427, 427, N, "io_uring"),
    # host-wide state
    "swapon": (167, 87, E, None),
    "swapoff": (168, 115, E, None),
    "acct": (163, 51, E, None),
    "settimeofday": (164, 79, E, None),
    "clock_settime": (227, 264, E, None),
    "clock_settime64": (None, 404, E, None),
    "stime": (None, 25, E, None),
    "syslog": (103, 103, E, "syslog"),
    # hardware and obsolete interfaces
    "iopl": (172, 110, E, None),
    "ioperm": (173, 101, E, None),
    "vm86": (None, 166, E, None),
    "vm86old": (None, 113, E, None),
    "uselib": (134, 86, E, None),
    "lookup_dcookie": (212, 253, E, None),
    "nfsservctl": (180, 169, E, None),
    "_sysctl": (156, 149, E, None),
}
del E, N
X32_ONLY = {"kexec_load": 528}
RELAXABLE = {}
for _name, (_, _, _, _group) in DENIED.items():
    if _group:
        RELAXABLE.setdefault(_group, []).append(_name)
RELAXABLE = {group: tuple(names) for group, names in RELAXABLE.items()}
# "umount_force" is a pseudo-call: umount2(2) with MNT_FORCE, which on a
# network filesystem aborts the requests of every mount of it, the host's too.


def allow_names(names):
    """Check a list of calls or groups to relax; return them as a sorted tuple of call names.

    Raises ValueError naming what is unknown or may not be relaxed.
    """
    calls = set()
    for name in names:
        if name in RELAXABLE:
            calls.update(RELAXABLE[name])
        elif name in DENIED and DENIED[name][3]:
            calls.add(name)
        elif name in DENIED or name == "umount_force":
            raise ValueError(f"{name} harms the host whatever the VE: it cannot be allowed")
        else:
            groups = ", ".join(sorted(RELAXABLE))
            raise ValueError(f"unknown call or group {name!r} (groups: {groups}; or a call "
                             "of one of them)")
    return tuple(sorted(calls))


def rules(allow=()):
    """The denied calls but ``allow``, as ((ABI column, number, errno), ...) for every ABI."""
    found = []
    for name, (native, i386, err, _) in DENIED.items():
        if name in allow:
            continue
        if native is not None:
            found += [(X86_64, native, err), (X32, native | X32_BIT, err)]
        if name in X32_ONLY:
            found.append((X32, X32_ONLY[name] | X32_BIT, err))
        if i386 is not None:
            found.append((I386, i386, err))
    return tuple(found)
