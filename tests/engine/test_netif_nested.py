"""Finding a VE's nested network namespaces (ve/net/nested.py), without a VE.

tests/engine/test_abuse_netif.py runs the whole thing: a VE, the watcher.
"""

import os
import subprocess

import pytest

from ve.net import nested

from .conftest import require_root
from .test_netif_monitor import netns  # noqa: F401  (fixture)

OWN = nested.inode_of("/proc/self/ns/net")


def line(inode, point, fstype="nsfs", optional="shared:7"):
    return f"412 25 0:4 net:[{inode}] {point} rw,nosuid {optional} - {fstype} nsfs rw"


def test_mountinfo_names_each_bind_mounted_network_namespace():
    text = "\n".join([
        "25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
        line(4026532001, "/run/netns/a"),
        line(4026532002, r"/run/netns/with\040space\012and\134back", optional=""),
        "413 25 0:4 mnt:[4026532003] /run/m rw - nsfs nsfs rw",  # not a network namespace
        line(4026532004, "/tmp/x", fstype="tmpfs"),  # a tmpfs whose root looks like one
        "414 25 0:4 net:[12x] /run/netns/bad rw - nsfs nsfs rw",
        "415 25 0:4 net:[4026532005] /run/netns/short",  # no separator: cut off
    ])
    assert list(nested.nsfs_mounts(text)) == [
        (4026532001, "/run/netns/a"), (4026532002, "/run/netns/with space\nand\\back")]


def test_a_network_namespace_is_found_held_open_and_mounted(netns, tmp_path):  # noqa: F811
    holder = int(netns.split("/")[2])
    inode = nested.inode_of(netns)
    point = tmp_path / "ns"
    point.touch()
    subprocess.run(["mount", "--bind", netns, str(point)], check=True)
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        found = nested.discover([holder, os.getpid()])
        assert found[inode] == ("ns", holder) and OWN in found
        found = nested.discover([os.getpid()])  # we hold a file of it and see the mount
        assert found[inode][0] in ("fd", "mount")
        opened = nested.open_netns(("mount", os.getpid(), str(point)), inode)
        assert opened is not None and os.fstat(opened).st_ino == inode
        assert nested.owned_by(opened, nested.inode_of("/proc/self/ns/user"))
        os.close(opened)
        assert nested.open_netns(("mount", os.getpid(), str(point)), OWN) is None  # not it
        assert nested.open_netns(("fd", os.getpid(), str(fd)), inode) is not None
    finally:
        os.close(fd)
        subprocess.run(["umount", str(point)], check=True)


@pytest.mark.parametrize("plant", ["symlink", "fifo", "file", "dir"])
def test_what_is_planted_in_place_of_a_mount_point_is_never_taken(tmp_path, plant):
    """The VE swaps its mount point between our read of mountinfo and the open:
    a symlink to a namespace file is not followed, a FIFO is not opened (it would
    block), and nothing but the nsfs file named is accepted."""
    require_root()
    point = tmp_path / "ns"
    if plant == "symlink":
        point.symlink_to("/proc/self/ns/net")
    elif plant == "fifo":
        os.mkfifo(point)
    elif plant == "file":
        point.touch()
    else:
        point.mkdir()
    text = line(OWN, str(point))
    [(inode, path)] = nested.nsfs_mounts(text)
    assert nested.open_netns(("mount", os.getpid(), path), inode) is None
    # and through a process's root that is not ours: still resolved below it
    assert nested.open_netns(("mount", os.getpid(), "/proc/self/ns/net"), OWN) is None


def test_a_namespace_the_host_user_namespace_owns_is_not_below_a_ves():
    require_root()
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        own_user = nested.inode_of("/proc/self/ns/user")
        assert nested.userns_of(fd) == own_user
        assert not nested.owned_by(fd, own_user + 12345)  # a VE's: not the host's owner
    finally:
        os.close(fd)
