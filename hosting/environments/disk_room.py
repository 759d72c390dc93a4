"""How much disk a VE's data needs: the one rule for a smaller plan.

The web side checks it against the latest usage sample when a plan change is
requested; the node checks it again with its own figures before a shrink.
The margin leaves the VE room to write in the meantime and its filesystem
room to work (the engine itself insists on 16 MiB free).
"""

MARGIN_SHARE = 0.10
MIN_MARGIN = 64 << 20  # bytes
MIN_INODE_MARGIN = 100


def space_needed(space_used):
    """Bytes a disk must have to hold ``space_used`` bytes of data with the margin."""
    return space_used + max(int(space_used * MARGIN_SHARE), MIN_MARGIN)


def inodes_needed(inodes_used):
    """Inodes a disk must have to hold ``inodes_used`` files with the margin."""
    return inodes_used + max(int(inodes_used * MARGIN_SHARE), MIN_INODE_MARGIN)


def refusal(space_used, inodes_used, disk_bytes, inodes):
    """Why a disk of ``disk_bytes`` and ``inodes`` cannot hold the data, or '' if it can.

    ``inodes_used`` may be None (not known): then only the space counts.
    """
    if space_used is not None and disk_bytes < space_needed(space_used):
        return (f"the VPS holds {_gib(space_used)} of data; a {_gib(disk_bytes)} disk "
                f"cannot hold it with room to spare (needs {_gib(space_needed(space_used))})")
    if inodes_used is not None and inodes < inodes_needed(inodes_used):
        return (f"the VPS holds {inodes_used} files and directories; the new disk takes "
                f"{inodes} (needs {inodes_needed(inodes_used)})")
    return ""


def _gib(size):
    return f"{size / (1 << 30):.2f} GiB"
