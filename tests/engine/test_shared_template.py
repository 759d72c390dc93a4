"""Shared template layers: one copy of the template's files (and of their page cache)
for every VE made from it, each VE's changes private to it, its disk quota its own."""

import ctypes
import glob
import hashlib
import mmap
import os

import pytest

from ve.config import Limits, VEConfig
from ve.errors import InvalidConfig

from .conftest import vectl

A, B, PLAIN = 421, 422, 423
MIB = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)


def shared(veid, **changes):
    return VEConfig(veid, f"shared{veid}", "busybox", Limits(diskspace=64 * MIB, diskinodes=8192),
                    shared_template=True, **changes)


def sh(engine, veid, script):
    result = engine.exec(veid, ["sh", "-c", script])
    assert result.returncode == 0, result
    return result.stdout.decode()


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def cached_pages(path):
    """How many of file ``path``'s pages are in the page cache (mincore(2))."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        view = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
        assert _libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) == 0
        return sum(byte & 1 for byte in vector)
    finally:
        del address
        view.close()


def drop_cached(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages (the layer was just extracted) are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def the_layer(engine):
    (layer,) = [p for p in engine.layout.layer_dir.iterdir() if p.is_dir()]
    return layer


def test_ves_of_one_template_run_on_one_shared_copy_of_its_files(engine):
    engine.create(shared(A))
    engine.create(shared(B))
    engine.create(VEConfig(PLAIN, "plain", "busybox", Limits(diskspace=64 * MIB, diskinodes=8192)))
    layer = the_layer(engine)  # extracted once for both
    for veid in (A, B):
        engine.start(veid)
    # What a VE reads of a template file is the layer's page cache, which every VE
    # of the template reads: a file of the layer no VE has read yet shows it.
    unread = layer / "etc" / "passwd"
    drop_cached(unread)
    assert cached_pages(unread) == 0
    sh(engine, A, "cat /etc/passwd >/dev/null")
    assert cached_pages(unread) == 1
    busybox = os.stat(layer / "bin" / "busybox")
    # The VE sees the template's tree as its own (ids shifted by the idmapped layer).
    assert sh(engine, A, "stat -c '%u %g %a' /bin/busybox /etc") == \
        f"0 0 {busybox.st_mode & 0o7777:o}\n0 0 {os.stat(layer / 'etc').st_mode & 0o777:o}\n"
    # Its image holds none of the template: far less used than a plain VE's.
    engine.start(PLAIN)
    plain_used = engine.disk_usage(PLAIN).space_used
    assert engine.disk_usage(A).space_used + busybox.st_size <= plain_used


def test_a_change_to_a_template_file_stays_in_its_ve(engine):
    engine.create(shared(A))
    engine.create(shared(B))
    for veid in (A, B):
        engine.start(veid)
    layer = the_layer(engine)
    before = {name: digest(layer / name) for name in ("etc/passwd", "bin/busybox")}
    sh(engine, A, "echo mine >> /etc/passwd; rm /bin/busybox.unused 2>/dev/null; "
                  "cp /bin/busybox /tmp/busybox; echo x >> /bin/busybox; "
                  "rm /etc/hostname 2>/dev/null; mkdir /etc/own; echo o > /etc/own/f; "
                  "mv /etc/own /etc/moved")
    assert "mine" in sh(engine, A, "/tmp/busybox cat /etc/passwd")
    assert "mine" not in sh(engine, B, "cat /etc/passwd")
    assert sh(engine, B, "ls /etc/moved /etc/own 2>&1 || true").count("No such file") == 2
    assert sh(engine, B, "echo still works") == "still works\n"  # B's busybox untouched
    assert {name: digest(layer / name) for name in before} == before  # the layer too
    # Files VE root made belong to VE root on the host (its shifted uid), in its image.
    assert sh(engine, A, "stat -c %u /etc/moved/f") == "0\n"
    # The change outlives a restart, and only there.
    engine.stop(A, timeout=2)
    engine.start(A)
    assert "mine" in sh(engine, A, "/tmp/busybox cat /etc/passwd")


def test_the_disk_quota_counts_the_ves_own_files(engine):
    engine.create(shared(A))
    engine.start(A)
    total = engine.disk_usage(A).space_total
    assert 48 * MIB <= total <= 64 * MIB  # the plan's disk, less its filesystem's own
    df = sh(engine, A, "df -k / | tail -1").split()
    assert abs(int(df[1]) * 1024 - total) <= MIB
    full = engine.exec(A, ["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=100"])
    assert full.returncode != 0 and b"No space left" in full.stderr
    assert engine.disk_usage(A).space_used > total - 4 * MIB
    sh(engine, A, "rm /big")


def test_reinstall_drops_the_ves_changes_and_can_switch_template(engine):
    from ve.storage import templates
    engine.create(shared(A))
    engine.start(A)
    sh(engine, A, "echo mine >> /etc/passwd; echo data > /root/file")
    engine.reinstall(A)
    assert "mine" not in sh(engine, A, "cat /etc/passwd")
    assert sh(engine, A, "ls /root") == ""
    # Another template (the same files under another name): another layer.
    engine.template_import("busybox-copy", templates.cache_path(engine.layout.cache_dir,
                                                                "busybox"))
    engine.reinstall(A, template="busybox-copy")
    layers = sorted(p.name for p in engine.layout.layer_dir.iterdir() if p.is_dir())
    assert [name.rsplit("-", 1)[0] for name in layers] == ["busybox", "busybox-copy"]
    assert sh(engine, A, "echo ok") == "ok\n"
    upper = engine.layout.upper(A)
    assert len([n for n in os.listdir(upper) if n.startswith("g")]) == 1  # old root gone


def test_reinstall_can_keep_the_ves_own_files(engine):
    engine.create(shared(A))
    engine.start(A)
    sh(engine, A, "mkdir -p /srv/www && echo site > /srv/www/index.html; "
                  "echo mine >> /etc/passwd")
    # deeper than Python's recursion limit: the kept tree is the VE's, any shape
    sh(engine, A, "d=/deep; i=0; while [ $i -lt 1500 ]; do d=$d/d; i=$((i+1)); done; "
                  "mkdir -p $d && echo bottom > $d/f")
    engine.reinstall(A, keep_old_as="old-root")
    assert sh(engine, A, "cat /old-root/srv/www/index.html") == "site\n"
    assert "mine" in sh(engine, A, "cat /old-root/etc/passwd")  # its changed copy
    assert "mine" not in sh(engine, A, "cat /etc/passwd")
    assert sh(engine, A, "stat -c '%u %a' /old-root") == "0 700\n"
    assert sh(engine, A, "cat /old-root/deep" + "/d" * 1500 + "/f") == "bottom\n"


def test_destroy_leaves_no_mount_and_no_loop_device(engine):
    engine.create(shared(A))
    engine.start(A)
    engine.destroy(A)
    for path in (engine.layout.private(A), engine.layout.upper(A)):
        assert not os.path.exists(path)
    assert not any(str(engine.layout.root) in open(backing).read()
                   for backing in glob.glob("/sys/block/loop*/loop/backing_file"))
    assert not any(str(engine.layout.root) in line for line in open("/proc/self/mountinfo"))


@pytest.mark.parametrize("bad", [{"layout": "dir"}, {"shared_template": "maybe"}])
def test_a_bad_shared_template_config_is_refused_before_anything_is_made(engine, bad):
    with pytest.raises(InvalidConfig):
        engine.create(shared(A, **bad) if "layout" in bad else
                      VEConfig(A, "x", "busybox", Limits(), **bad))
    assert not engine.layout.conf(A).exists() and not engine.layout.image(A).exists()


def test_a_snapshot_rolls_back_the_ves_own_files(engine):
    engine.create(shared(A))
    engine.start(A)
    sh(engine, A, "echo before > /root/note")
    engine.snapshot(A, "one")
    sh(engine, A, "echo after > /root/note; echo mine >> /etc/passwd")
    engine.rollback(A, "one")
    engine.start(A)
    assert sh(engine, A, "cat /root/note") == "before\n"
    assert "mine" not in sh(engine, A, "cat /etc/passwd")


def test_hibernate_and_resume_keep_the_shared_root(engine):
    engine.create(shared(A))
    engine.start(A)
    sh(engine, A, "echo kept > /root/note; setsid sleep 600 </dev/null >/dev/null 2>&1 &")
    sleeper = sh(engine, A, "pidof sleep")
    engine.hibernate(A)
    assert engine.hibernated(A)
    engine.start(A)
    assert sh(engine, A, "pidof sleep") == sleeper  # the same process, restored
    assert sh(engine, A, "cat /root/note") == "kept\n"
    assert sh(engine, A, "echo ok") == "ok\n"


def test_a_backup_holds_the_whole_tree_and_restores_it_exactly(engine_on_xfs):
    engine = engine_on_xfs
    engine.create(shared(A))
    engine.start(A)
    sh(engine, A, "mkdir -p /srv && echo hello > /srv/index.html && chown 33:33 /srv/index.html"
                  " && echo mine >> /etc/passwd && rm /etc/group && chmod 4755 /bin/busybox")
    done = engine.backup(A)
    assert done["total_bytes"] > os.path.getsize(the_layer(engine) / "bin" / "busybox")
    sh(engine, A, "echo later > /srv/index.html")
    engine.restore_backup(A, done["id"])
    # Into another VE of the same template (another uid range), exactly that tree:
    # the file the customer deleted stays deleted.
    engine.create_from_backup(shared(B), done["id"])
    for veid in (A, B):
        engine.start(veid)
        assert sh(engine, veid, "cat /srv/index.html; stat -c '%u:%g' /srv/index.html") == \
            "hello\n33:33\n"
        assert "mine" in sh(engine, veid, "cat /etc/passwd")
        assert "No such file" in sh(engine, veid, "ls /etc/group 2>&1 || true")
        assert sh(engine, veid, "stat -c '%u:%g %a' /bin/busybox") == "0:0 4755\n"
    host = engine.layout.private(B) / "srv" / "index.html"
    assert os.stat(host).st_uid == B * 65536 + 33


def test_vectl_creates_a_ve_on_a_shared_template(engine):
    vectl(engine, "create", A, "--template", "busybox", "--hostname", "cli.example",
          "--diskspace", "64M", "--diskinodes", "8192", "--shared-template")
    assert engine._read_config(A).shared_template
    assert 'SHARED_TEMPLATE="yes"' in engine.layout.conf(A).read_text()
    vectl(engine, "start", A)
    assert sh(engine, A, "hostname") == "cli.example\n"
    assert engine.layout.private(A).is_mount() and engine.layout.upper(A).is_mount()


def test_the_disk_grows_live_and_stopped(engine):
    engine.create(shared(A))
    engine.start(A)
    engine.set(A, diskspace=128 * MIB)
    assert engine.disk_usage(A).space_total > 100 * MIB
    sh(engine, A, "dd if=/dev/zero of=/big bs=1M count=80 2>/dev/null && rm /big")
    engine.stop(A, timeout=2)
    engine.set(A, diskspace=192 * MIB)
    engine.start(A)
    assert engine.disk_usage(A).space_total > 160 * MIB
    assert sh(engine, A, "echo ok") == "ok\n"


@pytest.mark.parametrize("planted", [("root", "work"), ("layer",)])
def test_an_image_that_links_out_of_itself_is_refused(engine, tmp_path, planted):
    """An image may come from another node: its root, work or layer note as symlinks
    to host paths must not make the host mount or read those paths."""
    from ve.errors import VEError
    from ve.storage import image, layers
    engine.create(shared(A))
    outside = tmp_path / "host-dir"
    outside.mkdir()
    upper, path = engine.layout.upper(A), engine.layout.image(A)
    image.mount(path, engine.config(A).layout, upper)
    try:
        generation, layer_id = layers.current(upper)
        (outside / "layer").write_text(layer_id + "\n")  # a note that would do
        for name in planted:
            target = upper / generation / name
            if target.is_dir():
                target.rmdir()
                (outside / name).mkdir()
            else:
                target.unlink()
            target.symlink_to(outside / name)
    finally:
        image.unmount(path, upper)
    before = sorted(os.listdir(outside))
    with pytest.raises(VEError):
        engine.start(A)
    assert engine.status(A).state == "stopped"
    assert sorted(os.listdir(outside)) == before  # nothing written there
    assert not engine.layout.private(A).is_mount() and not upper.is_mount()
