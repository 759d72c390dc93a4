"""Read process facts from /proc.

A PID alone names nothing durable: it is reused. A process is identified by
(PID, start time in clock ticks since boot) and, across reboots, the boot id.
"""

import os
import select


_BOOT_ID = []


def boot_id():
    """Return the kernel's random id of the current boot (read once per process: no
    process outlives its boot, and a start asks for it several times)."""
    if not _BOOT_ID:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            _BOOT_ID.append(handle.read().strip())
    return _BOOT_ID[0]


def _stat_fields(pid):
    """Return /proc/<pid>/stat split after the command name, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The name is in parentheses and may itself hold spaces or ')'.
    return raw[raw.rindex(b")") + 2:].split()


def start_time(pid):
    """Return the start time of ``pid`` in clock ticks, or None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid, started):
    """Tell whether ``pid`` is the live (not zombie) process started at ``started``."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != b"Z" and int(fields[19]) == started


def parent(pid):
    """Return the PID of ``pid``'s parent, or None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def task_files(pid, name, limit=-1):
    """The contents of /proc/PID/task/TID/``name`` of each thread of ``pid`` (at most
    ``limit`` characters each); threads that went meanwhile are left out."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/{name}") as handle:
                yield handle.read(limit)
        except OSError:
            continue


def children(pid="self"):
    """Return the PIDs of ``pid``'s children (of all its threads), zombies included."""
    return [int(child) for text in task_files(pid, "children") for child in text.split()]


def is_zombie(pid):
    """Tell whether ``pid`` has ended and waits for its parent to collect it."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] == b"Z"


def name(pid):
    """Return the command name of ``pid`` (as ps shows it), or None."""
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().rstrip("\n")
    except (FileNotFoundError, ProcessLookupError):
        return None


def uid_map(pid):
    """Return ``pid``'s uid map as [(inside, outside, count)] seen from our user namespace
    (zombies included: their credentials live until they are reaped), or []."""
    try:
        with open(f"/proc/{pid}/uid_map") as handle:
            return [tuple(map(int, line.split())) for line in handle if line.strip()]
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return []


def pidfd_for(pid, started):
    """Open a pidfd for ``pid`` if it is still the process started at ``started``.

    Checking the start time after opening closes the PID-reuse race: the
    pidfd then refers to that very process for as long as it is held.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if not is_alive(pid, started):
        os.close(fd)
        return None
    return fd


def namespace_pids(pid):
    """Return ``pid``'s PIDs from our PID namespace inwards (NSpid), or []."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    return [int(field) for field in line.split()[1:]]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return []


def innermost_pid(pid):
    """Return ``pid``'s PID in its own (innermost) PID namespace, or None."""
    pids = namespace_pids(pid)
    return pids[-1] if pids else None


def wait_exit(pidfd, timeout):
    """Wait up to ``timeout`` s for the process behind ``pidfd`` to exit."""

    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def status_masks(pid, *keys):
    """The hexadecimal masks ``keys`` (e.g. "SigCgt", "CapEff") of /proc/<pid>/status
    as ints ({} if the process is gone)."""
    wanted = tuple(f"{key}:" for key in keys)
    try:
        with open(f"/proc/{pid}/status") as handle:
            return {line.split(":")[0]: int(line.split()[1], 16)
                    for line in handle if line.startswith(wanted)}
    except (OSError, ValueError, IndexError):
        return {}


def takes_signal(pid, signum):
    """True if ``pid`` catches or blocks signal ``signum``.

    An init of a PID namespace gets a signal from outside only then; one it
    neither catches nor blocks is dropped (a just-started systemd installs
    its handlers some milliseconds after it execs).
    """
    masks = status_masks(pid, "SigBlk", "SigCgt")
    return bool((masks.get("SigBlk", 0) | masks.get("SigCgt", 0)) & 1 << (signum - 1))
