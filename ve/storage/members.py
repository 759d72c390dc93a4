"""Checks on one tar member that need no look at the tree being unpacked.

Both ``unpack`` and ``import_tarball`` run every member through ``check``;
checks that depend on what is already on disk (symlinks on the way, hardlink
sources) live in ``tree.py``.
"""

from ..errors import InvalidConfig

# uids/gids inside a VE are 0..65535; the engine adds the VE's id_shift.
ID_LIMIT = 65536

# Device nodes a VE may ask for. They are skipped, not created: the engine
# bind-mounts a prepared /dev at start, so a template never needs its own.
ALLOWED_CHAR_DEVICES = frozenset(
    {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)}
)

# The engine mounts proc, sysfs and /dev here; a symlink in their place would
# redirect those mounts anywhere on the host.
MOUNT_POINTS = frozenset({"proc", "sys", "dev"})


def refuse(name, reason):
    """Return the error that rejects the whole tarball because of member ``name``."""
    return InvalidConfig(f"refusing template: member {name!r} {reason}")


def split(path, name, what="path"):
    """Return the components of the relative tar path ``path`` of member ``name``.

    ``.`` and empty components are dropped (``./etc//passwd`` is ``etc/passwd``);
    absolute paths, ``..`` components and NUL bytes are refused.
    """
    if "\0" in path:
        raise refuse(name, "contains a NUL byte")
    if path.startswith("/"):
        raise refuse(name, f"has an absolute {what} {path!r}")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise refuse(name, f"has a '..' component in its {what} {path!r}")
    return parts


def check(member):
    """Validate ``member`` and return its path components, or None to skip it.

    Skipped members are the top directory itself (the engine sets its owner
    and mode) and allow-listed character devices.
    """
    name = member.name
    parts = split(name, name)
    _check_ids(member)
    if not parts:
        if member.isdir():
            return None
        raise refuse(name, "is the top directory but not a directory")
    if len(parts) == 1 and parts[0] in MOUNT_POINTS and not member.isdir():
        raise refuse(name, "must be a directory (the engine mounts over it)")
    if member.issym() and not member.linkname:
        raise refuse(name, "is a symlink with an empty target")
    if member.islnk():
        split(member.linkname, name, "hardlink target")
        if not member.linkname.strip("/."):
            raise refuse(name, "is a hardlink to the top directory")
    return None if _is_allowed_device(member) else parts


def _check_ids(member):
    for kind, value in (("uid", member.uid), ("gid", member.gid)):
        if not 0 <= value < ID_LIMIT:
            raise refuse(member.name, f"has {kind} {value}, outside 0..{ID_LIMIT - 1}")


def _is_allowed_device(member):
    """Return True for an allow-listed char device; refuse other devices and unknown types."""
    if member.ischr():
        if (member.devmajor, member.devminor) in ALLOWED_CHAR_DEVICES:
            return True
        raise refuse(
            member.name,
            f"is character device {member.devmajor}:{member.devminor}, not one of "
            "null, zero, full, random, urandom, tty, console, ptmx",
        )
    if member.isblk():
        raise refuse(member.name, f"is block device {member.devmajor}:{member.devminor}")
    if not (member.isreg() or member.isdir() or member.issym()
            or member.islnk() or member.isfifo()):
        raise refuse(member.name, f"has unsupported tar type {member.type!r}")
    return False
