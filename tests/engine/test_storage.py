"""Disk images for real: sparse ext4 and xfs images on loop devices, their limits,
resizing (live and stopped), usage figures and clean-up.

This host has no CAP_SYS_RESOURCE, so a mounted ext4 cannot grow; the
default layout ("image") picks xfs here, and ext4's refusal is tested too.
"""

import os
import time

import pytest

from ve import Limits, VEConfig
from ve.errors import InvalidConfig, StateError, Unsupported
from ve.kernel import caps
from ve.storage import image

from .conftest import vectl, wait_for

MiB = 1 << 20
LAYOUTS = ("ext4", "xfs")


def make(engine, layout="image", veid=101, **limits):
    limits.setdefault("diskspace", 64 * MiB)
    limits.setdefault("diskinodes", 2048)
    return engine.create(VEConfig(veid, f"ve{veid}.example", "busybox", Limits(**limits),
                                  layout=layout))


def sh(engine, script, veid=101):
    """Run ``script`` with the VE's sh; return (exit code, stdout + stderr)."""
    out = engine.exec(veid, ["sh", "-c", "exec 2>&1; " + script])
    return out.returncode, out.stdout.decode()


def loops_of(path):
    """Loop devices whose backing file is ``path`` (by name: the file may be gone)."""
    found = []
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.removesuffix(" (deleted)") == str(path):
            found.append(name)
    return found


def images(engine):
    directory = engine.layout.image_dir
    return list(directory.iterdir()) if directory.exists() else []


def host_free(engine):
    st = os.statvfs(engine.layout.root)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dd_stops_at_the_quota_and_destroy_gives_the_space_back(engine, layout):
    free_before = host_free(engine)
    make(engine, layout)
    path = engine.layout.image(101)
    assert os.stat(path).st_size == 64 * MiB and os.stat(path).st_blocks * 512 < 16 * MiB
    engine.start(101)
    code, out = sh(engine, "dd if=/dev/zero of=/fill bs=1M count=200")
    assert code != 0 and "No space left on device" in out
    written = int(sh(engine, "wc -c < /fill")[1])
    assert 40 * MiB < written <= 64 * MiB
    # The host paid at most the quota (the image is sparse; noise: 4 MiB).
    assert os.stat(path).st_blocks * 512 <= 64 * MiB
    assert free_before - host_free(engine) <= 68 * MiB
    usage = engine.disk_usage(101)
    assert usage.space_total - usage.space_used < 2 * MiB  # full, as the VE sees it
    engine.destroy(101)
    assert not path.exists() and not engine.layout.private(101).exists()
    assert wait_for(lambda: not loops_of(path), 5), "the loop device stayed attached"
    assert host_free(engine) >= free_before - 4 * MiB


@pytest.mark.parametrize("layout", LAYOUTS)
def test_creating_files_stops_at_the_inode_limit(engine, layout):
    make(engine, layout, diskinodes=2048)
    engine.start(101)
    usage = engine.disk_usage(101)
    if layout == "ext4":
        assert usage.inodes_total == 2048  # exact
    else:  # whole percents of the space: 2048 inodes of 512 B in 64 MiB -> 2%
        assert 2048 <= usage.inodes_total <= 64 * MiB * 2 // 100 // 512
    # true, not ":": a failed redirection of a special builtin ends the shell.
    code, out = sh(engine, "mkdir /many; i=0; while true > /many/f$i; do i=$((i+1)); done; "
                           "echo made $i")
    made = int(out.split("made ")[1])
    assert "No space left on device" in out
    # Inodes ran out (xfs allocates them in chunks of 64, and may still be freeing
    # the inodes of the template's unpacking when first asked, so compare after)...
    after = engine.disk_usage(101)
    assert after.inodes_total - after.inodes_used <= 64
    assert made >= usage.inodes_total - usage.inodes_used - 64
    # ...blocks did not.
    assert after.space_total - after.space_used > 30 * MiB


def test_the_disk_grows_online_while_a_process_writes(engine):
    make(engine)  # the host's default image filesystem (xfs here: see above)
    engine.start(101)
    # A writer appends 1 MiB at a time up to 100 MiB, more than the 64 MiB disk.
    engine.exec(101, ["sh", "-c", "(i=0; while [ $i -lt 100 ]; do "
                                  "dd if=/dev/zero bs=1M count=1 >> /grow 2>/dev/null || "
                                  "{ echo full > /writer.err; sleep 0.2; continue; }; "
                                  "i=$((i+1)); sleep 0.02; done; echo done > /writer.ok) "
                                  ">/dev/null 2>&1 &"])
    assert wait_for(lambda: int(sh(engine, "wc -c < /grow")[1] or 0) > 20 * MiB, 30)
    engine.set(101, diskspace=256 * MiB)  # while it writes
    assert wait_for(lambda: sh(engine, "cat /writer.ok")[0] == 0, 60), "the writer never finished"
    assert int(sh(engine, "wc -c < /grow")[1]) == 100 * MiB
    df = sh(engine, "df -k /")[1].splitlines()[1].split()
    assert int(df[1]) * 1024 > 240 * MiB  # the VE sees the new size
    assert engine.config(101).limits.diskspace == 256 * MiB
    assert engine.disk_usage(101).space_total > 240 * MiB


def test_a_mounted_ext4_grows_only_where_the_host_allows_it(engine):
    make(engine, "ext4")
    engine.start(101)
    before = os.stat(engine.layout.image(101)).st_size
    if caps.effective(image.CAP_SYS_RESOURCE):
        engine.set(101, diskspace=128 * MiB)
        assert engine.disk_usage(101).space_total > 120 * MiB
        return
    out = vectl(engine, "set", 101, "--diskspace", "128M", check=False)
    assert out.returncode == 5 and "needs CAP_SYS_RESOURCE" in out.stderr  # NeedsStop
    # Nothing changed: the image, the filesystem, the saved config.
    assert os.stat(engine.layout.image(101)).st_size == before
    assert engine.disk_usage(101).space_total < 64 * MiB
    assert engine.config(101).limits.diskspace == 64 * MiB


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_stopped_disk_shrinks_and_changes_inodes_keeping_the_files(engine, layout):
    make(engine, layout, diskspace=128 * MiB)
    engine.start(101)
    sh(engine, "dd if=/dev/urandom of=/data bs=1M count=30 && ln /data /data.link && "
               "ln -s /data /data.sym && chmod 4750 /data")
    digest = sh(engine, "md5sum /data")[1].split()[0]
    with pytest.raises(StateError, match="stop the VE"):
        engine.set(101, diskspace=96 * MiB)  # shrinking needs it stopped
    engine.stop(101, fast=True)
    with pytest.raises(InvalidConfig, match="cannot shrink"):
        engine.set(101, diskspace=40 * MiB)  # 30 MiB used, and room to work
    engine.set(101, diskspace=64 * MiB, diskinodes=4096)
    assert os.stat(engine.layout.image(101)).st_size == 64 * MiB
    engine.start(101)
    assert sh(engine, "md5sum /data")[1].split()[0] == digest
    listing = sh(engine, "ls -l /data /data.sym; stat -c %h /data.link")[1]
    assert "-rwsr-x---" in listing and "/data.sym -> /data" in listing
    assert listing.strip().endswith("2")  # still one file, two names
    usage = engine.disk_usage(101)
    assert 56 * MiB < usage.space_total <= 64 * MiB and usage.inodes_total >= 4096
    assert len(loops_of(engine.layout.image(101))) == 1


def test_usage_of_a_stopped_ve_matches_the_running_one(engine):
    make(engine)
    engine.start(101)
    sh(engine, "dd if=/dev/zero of=/f bs=1M count=5")
    running = engine.disk_usage(101)
    engine.stop(101, fast=True)
    assert engine.disk_usage(101) == running
    assert not image.is_mounted(engine.layout.private(101))
    status = vectl(engine, "--json", "status", 101).stdout
    assert f'"space_used": {running.space_used}' in status


def test_the_directory_layout_accounts_usage_without_enforcing_it(engine):
    make(engine, "dir", diskspace=32 * MiB)
    engine.start(101)
    before = engine.disk_usage(101)
    sh(engine, "dd if=/dev/zero of=/big bs=1M count=40 && mkdir /d && touch /d/a /d/b")
    after = engine.disk_usage(101)
    assert after.space_used - before.space_used >= 40 * MiB  # past the 32 MiB: not enforced
    assert after.inodes_used == before.inodes_used + 4
    assert not engine.layout.image(101).exists()


def test_bad_disk_input_changes_nothing(engine):
    with pytest.raises(InvalidConfig, match="32M to 64T"):
        make(engine, diskspace=8 * MiB)
    with pytest.raises(InvalidConfig, match="diskinodes"):
        make(engine, diskinodes=10)
    with pytest.raises(InvalidConfig, match="layout"):
        make(engine, "zfs")
    assert engine.layout.veids() == [] and not images(engine)
    out = vectl(engine, "create", 101, "--template", "busybox", "--hostname", "a.example",
                "--diskspace", "lots", check=False)
    assert out.returncode == 2 and "bad diskspace" in out.stderr
    # A disk the host cannot hold fails cleanly: nothing left behind.
    out = vectl(engine, "create", 101, "--template", "busybox", "--hostname", "a.example",
                "--diskspace", "60T", check=False)
    assert out.returncode == 6 and engine.layout.veids() == []
    assert not images(engine)
    assert not engine.layout.private(101).exists()


def test_io_caps_hold_for_direct_io(engine):
    make(engine, writebps=4 * MiB, readbps=8 * MiB)
    engine.start(101)
    started = time.monotonic()
    code, out = sh(engine, "dd if=/dev/zero of=/io bs=1M count=12 oflag=direct")
    took = time.monotonic() - started
    assert code == 0, out
    assert 12 / 4 * 0.75 < took < 12 / 4 * 1.5, f"12 MiB at 4 MiB/s took {took:.1f} s"
    started = time.monotonic()
    code, out = sh(engine, "dd if=/io of=/dev/null bs=1M iflag=direct")
    took = time.monotonic() - started
    assert code == 0, out
    assert 12 / 8 * 0.75 < took < 12 / 8 * 1.5, f"12 MiB at 8 MiB/s took {took:.1f} s"
    # Lifted live.
    engine.set(101, writebps=0, readbps=0)
    started = time.monotonic()
    sh(engine, "dd if=/dev/zero of=/io2 bs=1M count=12 oflag=direct")
    assert time.monotonic() - started < 2


def test_an_io_weight_is_applied_or_refused_clearly(engine):
    make(engine)
    engine.start(101)
    weight = engine.cgroups.file_path("101", "blkio.bfq.weight")
    if engine.cgroups.version == 1 and not os.path.exists(weight):
        with pytest.raises(Unsupported, match="blkio.bfq.weight is missing"):
            engine.set(101, ioweight=500)
        assert engine.config(101).limits.ioweight == 0
    else:
        engine.set(101, ioweight=500)
        assert engine.config(101).limits.ioweight == 500


def test_an_image_still_in_use_elsewhere_is_never_attached_twice(engine, tmp_path):
    """A copy of the mount can outlive the host's (a VE's mount namespace being
    set up holds one briefly): a start then shares that filesystem, it does not
    open the image a second time through another loop device."""
    make(engine, "xfs")
    path = engine.layout.image(101)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    image.mount(path, "xfs", elsewhere)
    try:
        engine.start(101)
        assert len(loops_of(path)) == 1
        sh(engine, "echo shared > /root/seen")
        assert (elsewhere / "root" / "seen").read_text() == "shared\n"  # one filesystem
        engine.stop(101, fast=True)
    finally:
        image.unmount(path, elsewhere)
    assert wait_for(lambda: not loops_of(path), 5)


def test_an_image_is_found_through_its_record_not_a_scan_of_every_loop_device(
        engine, tmp_path, monkeypatch):
    """Starts and stops look only at the loop device the image's record names (a
    scan of every device grows with the node's running VEs); an image attached
    without such a record (by an older engine) is still found by a scan, and
    shared, never attached twice."""
    from ve.kernel import libc, loop
    make(engine, "xfs")
    path = engine.layout.image(101)
    scans, scan = [], loop.devices_of
    monkeypatch.setattr(loop, "devices_of", lambda image: scans.append(image) or scan(image))
    for _ in range(2):
        engine.start(101)
        engine.stop(101, fast=True)
    assert scans == [] and not loops_of(path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Attached as an older engine did (its record, written after the mount, is not
    # trusted), then behind the engine's back (`mount -o loop`: the record names
    # another device): the image is open, so it is looked for.
    for record in ("{device} 0 0 0 0\n", "/dev/loop999999 0 0 0 0 attached-here\n"):
        scans.clear()
        device, fd = loop.attach(path)
        try:
            libc.mount(device, str(elsewhere), "xfs")
        finally:
            os.close(fd)
        with open(f"{path}.io", "w") as f:
            f.write(record.format(device=device))
        try:
            engine.start(101)
            assert scans and loops_of(path) == [os.path.basename(device)]  # found, shared
            engine.stop(101, fast=True)
        finally:
            image.unmount(path, elsewhere)
        assert wait_for(lambda: not loops_of(path), 5)


def test_the_disk_of_a_ve_that_halted_by_itself_changes_as_a_stopped_one(engine):
    import signal
    make(engine, "xfs", diskspace=128 * MiB)
    os.kill(engine.start(101), signal.SIGKILL)  # init dies: no stop ran, the image stays mounted
    assert wait_for(lambda: engine.status(101).state == "stopped", 10)
    engine.set(101, diskspace=64 * MiB)  # a shrink: only possible because it is stopped
    assert os.stat(engine.layout.image(101)).st_size == 64 * MiB
    engine.start(101)
    assert 56 * MiB < engine.disk_usage(101).space_total <= 64 * MiB


def test_more_inodes_than_the_disk_can_hold_are_refused(engine):
    with pytest.raises(InvalidConfig, match="at most one per 4096 bytes"):
        make(engine, diskspace=64 * MiB, diskinodes=100000)
    make(engine, diskspace=64 * MiB, diskinodes=16384)  # the most 64 MiB takes
    with pytest.raises(InvalidConfig, match="at most one per 4096 bytes"):
        engine.set(101, diskspace=32 * MiB)


def test_a_weight_this_host_cannot_enforce_never_keeps_a_ve_down(engine):
    """A VE whose config carries an I/O weight (made on a node that had BFQ) starts
    here anyway, with its caps applied; only `set` refuses a weight outright."""
    make(engine, ioweight=500, writebps=4 * MiB)
    engine.start(101)
    if engine.cgroups.version == 1:  # the caps are there, weight or not
        with open(engine.cgroups.file_path("101", "blkio.throttle.write_bps_device")) as f:
            assert f.read().split()[-1] == str(4 * MiB)
    assert engine.status(101).state == "running"


def test_an_image_is_released_only_once_its_last_user_lets_go(engine, tmp_path):
    """A process holding the mount makes the unmount lazy (after a second's retries):
    the filesystem lives on, so the image is not released (a migration's final copy
    waits for that) until the process lets go."""
    import subprocess
    make(engine, "xfs")
    path = engine.layout.image(101)
    where = tmp_path / "held"
    where.mkdir()
    image.mount(path, "xfs", where)
    holder = subprocess.Popen(["sleep", "60"], cwd=where)
    try:
        began = time.monotonic()
        image.unmount(path, where)
        assert time.monotonic() - began >= image.BUSY_SECONDS  # retried before going lazy
        assert not image.is_mounted(where) and loops_of(path)  # lazily: still alive
        with pytest.raises(OSError, match="still in use"):
            image.wait_released(path, 0.2)
    finally:
        holder.kill()
        holder.wait()
    image.wait_released(path, 5)
    assert not loops_of(path)
