"""Capability bounding set of VE processes."""

from .libc import PR_CAPBSET_DROP, prctl

# Capabilities no VE needs and that reach beyond a user namespace into the
# host kernel or hardware. Dropped from the bounding set, so not even a
# setuid binary inside the VE can regain them.
DROPPED = {
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_PACCT": 20,
    "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_AUDIT_CONTROL": 30,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38, "CAP_BPF": 39,
}


def last_cap():
    """Return the highest capability number this kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        return int(handle.read())


def drop_bounding(highest):
    """Remove ``DROPPED`` from the calling process's bounding set."""
    for number in DROPPED.values():
        if number <= highest:
            prctl(PR_CAPBSET_DROP, number)


def effective(cap):
    """True if capability number ``cap`` is in this process's effective set."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False
