"""The host files behind masks lose their "others" read bit (ve/kernel/hostfiles.py)."""

import os
import stat

from ve.config import VEConfig
from ve.kernel import hostfiles


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_only_world_readable_regular_files_change(tmp_path):
    tree = tmp_path / "memmap" / "0"
    tree.mkdir(parents=True)
    (tree / "start").write_text("0x0\n")
    (tree / "start").chmod(0o444)
    (tree / "type").write_text("System RAM\n")
    (tree / "type").chmod(0o400)
    single = tmp_path / "vmcoreinfo"
    single.write_text("1234 1024\n")
    single.chmod(0o444)
    outside = tmp_path / "outside"
    outside.write_text("not ours\n")
    outside.chmod(0o444)
    (tree / "link").symlink_to(outside)

    paths = (str(single), str(tmp_path / "memmap"), str(tmp_path / "absent"))
    assert hostfiles.close_world_readable(paths) == (2, [])
    assert (mode(single), mode(tree / "start"), mode(tree / "type")) == (0o440, 0o440, 0o400)
    assert mode(outside) == 0o444  # a symlink in the tree is not followed
    assert hostfiles.close_world_readable(paths) == (0, [])  # nothing left to do the second time


def test_a_start_closes_the_hosts_files_again(engine):
    """As after a boot (the kernel makes vmcoreinfo 0444 again): a VE's start closes it."""
    os.chmod("/sys/kernel/vmcoreinfo", 0o444)
    engine.create(VEConfig(101, "web1", "busybox"))
    engine.start(101)
    assert mode("/sys/kernel/vmcoreinfo") == 0o440
    for top, _dirs, names in os.walk("/sys/firmware/memmap"):
        for name in names:
            assert not mode(os.path.join(top, name)) & stat.S_IROTH, (top, name)
