"""Close the host files that a VE's masks hide but the kernel leaves world-readable.

The masks over /proc and /sys files (rootfs.MASKED) are mounts the VE's init
makes inside the VE's user namespace, so VE root may unmount them. For most
files behind a mask that costs nothing: they belong to host root (unmapped in
the VE) and are not readable by others. A few are mode 0444 though, and tell
a VE how the host's physical memory is laid out (vmcoreinfo: where the
kernel's crash notes are; firmware/memmap: the e820 map). Host root reads
them (kdump, makedumpfile); nobody else on a node needs to, so the engine
takes the "others" read bit away before each start. The kernel restores it
only at boot, when the first start after it takes it away again.
"""

import os
import stat

# Files and trees behind masks whose files the kernel makes world-readable.
WORLD_READABLE_BEHIND_MASKS = ("/sys/kernel/vmcoreinfo", "/sys/firmware/memmap")


def _files(path):
    if os.path.isfile(path):
        yield path
        return
    for top, _dirs, names in os.walk(path):  # os.walk does not follow symlinks
        for name in names:
            yield os.path.join(top, name)


def close_world_readable(paths=WORLD_READABLE_BEHIND_MASKS):
    """Remove the "others" read bit from every regular file under ``paths``.

    Returns ``(changed, failures)``: how many files were changed, and the
    ``(file, OSError)`` pairs that could not be, for the caller to log (not
    fatal: the mask still hides them). Missing paths are fine (other kernels,
    no kexec support).
    """
    changed, failures = 0, []
    for path in paths:
        for name in _files(path):
            try:
                mode = os.lstat(name).st_mode
                if stat.S_ISREG(mode) and mode & stat.S_IROTH:
                    os.chmod(name, stat.S_IMODE(mode) & ~stat.S_IROTH, follow_symlinks=False)
                    changed += 1
            except OSError as exc:
                failures.append((name, exc))
    return changed, failures
