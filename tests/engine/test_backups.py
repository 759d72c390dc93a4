"""Backups for real: busybox VEs backed up into a restic repository (Debian's restic)
from a snapshot, restored whole, into a new VE of another uid range, and file by file;
incremental; a damaged repository is found."""

import io
import json
import os
from pathlib import Path

import pytest

from ve import Limits, VEConfig
from ve.storage import restic
from ve.errors import InvalidConfig, NotFound, ResourceError, StateError, Unsupported

from .conftest import vectl

MiB = 1 << 20
VEID = 141


def make(engine, veid=VEID, layout="image"):
    return engine.create(VEConfig(veid, f"backed{veid}.example", "busybox",
                                  Limits(diskspace=512 * MiB, diskinodes=8192), layout=layout))


def sh(engine, script, veid=VEID):
    out = engine.exec(veid, ["sh", "-c", "exec 2>&1; " + script])
    assert out.returncode == 0, out.stdout
    return out.stdout.decode()


def test_a_destroyed_ve_comes_back_as_a_new_one_from_its_backup(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    sh(engine, "mkdir -p /srv/site && echo hello > /srv/site/index.html && "
               "chown 33:33 /srv/site/index.html && chmod 4755 /bin/busybox")
    statuses = []
    done = engine.backup(VEID, on_status=statuses.append)
    assert done["files_new"] >= 3 and done["data_added"] > 1 * MiB and done["frozen_ms"] < 1000
    engine.destroy(VEID)
    # Its backups outlive it.
    (kept,) = engine.backups(VEID)
    assert kept["id"] == done["id"] and kept["veid"] == VEID

    new = VEID + 1  # another VEID: another uid range on the host
    engine.create_from_backup(VEConfig(new, "restored.example", "busybox",
                                       Limits(diskspace=512 * MiB, diskinodes=8192)),
                              done["id"])
    engine.start(new)
    assert sh(engine, "cat /srv/site/index.html", new) == "hello\n"
    # Owners as the VE sees them, set-id bits kept.
    assert sh(engine, "stat -c '%u:%g %a' /srv/site/index.html /bin/busybox", new) == \
        "33:33 644\n0:0 4755\n"
    host = engine.layout.private(new) / "srv" / "site" / "index.html"
    assert os.stat(host).st_uid == new * 65536 + 33


def test_one_file_comes_back_in_place_and_a_directory_elsewhere(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    sh(engine, "mkdir -p /etc/app && echo v1 > /etc/app/conf && echo keep > /etc/app/other")
    taken = engine.backup(VEID)["id"]
    sh(engine, "echo broken > /etc/app/conf; rm /etc/app/other")

    assert engine.restore_files(VEID, taken, "/etc/app/conf") == 1
    assert sh(engine, "cat /etc/app/conf; ls /etc/app") == "v1\nconf\n"
    sh(engine, "mkdir /restored")
    assert engine.restore_files(VEID, taken, "/etc/app", into="/restored") == 3
    assert sh(engine, "ls /restored/etc/app; stat -c %u /restored/etc/app/other") == \
        "conf\nother\n0\n"

    # A symlink the VE planted to a host directory does not lead host root there: the
    # path resolves inside the VE (where the same path is the VE's own directory).
    outside = engine.layout.root / "outside"
    outside.mkdir()
    sh(engine, f"rm -r /etc/app && mkdir -p {outside} && ln -s {outside} /etc/app")
    engine.restore_files(VEID, taken, "/etc/app/conf")
    assert list(outside.iterdir()) == []
    assert sh(engine, f"cat {outside}/conf") == "v1\n"
    with pytest.raises(NotFound):
        engine.restore_files(VEID, taken, "/no/such/file")


def test_browsing_and_reading_a_backup(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    sh(engine, "echo secret-notes > /root/notes.txt")
    taken = engine.backup(VEID)["id"]
    names = {e["name"]: e for e in engine.backup_listing(taken, "/root")}
    assert names["notes.txt"]["type"] == "file" and names["notes.txt"]["size"] == 13
    assert "etc" in {e["name"] for e in engine.backup_listing(taken, "/")}
    out = io.BytesIO()
    engine.backup_dump(taken, "/root/notes.txt", out)
    assert out.getvalue() == b"secret-notes\n"
    with pytest.raises(InvalidConfig):
        engine.backup_listing(taken, "relative/path")
    with pytest.raises(InvalidConfig):
        engine.backup_listing("zz; rm -rf /", "/")
    with pytest.raises(NotFound):
        engine.backup_listing("deadbeef", "/")


def test_a_whole_ve_is_rolled_back_to_its_backup(engine_on_xfs, monkeypatch):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    sh(engine, "echo before > /root/A; dd if=/dev/urandom of=/root/big bs=1M count=96 2>/dev/null")
    taken = engine.backup(VEID)["id"]
    sh(engine, "echo after > /root/B; rm /root/A")
    monkeypatch.setattr(restic, "TICK", 0.02)  # many reports of a restore of a few seconds
    fractions = []

    done = engine.restore_backup(VEID, taken, on_status=fractions.append)

    assert done["restarted"] and engine.status(VEID).state == "running"
    assert sh(engine, "ls /root") == "A\nbig\n"
    assert engine.disk_usage(VEID).space_used > 96 * MiB
    # Progress: what restic wrote against the backup's size, rising through the middle,
    # never "done" before restic is.
    assert fractions == sorted(fractions) and 0 < fractions[-1] <= 0.99, fractions
    assert any(0.05 < fraction < 0.95 for fraction in fractions), fractions


def test_the_second_backup_stores_about_what_changed(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    first = engine.backup(VEID)
    sh(engine, "dd if=/dev/urandom of=/root/new bs=1M count=8 2>/dev/null")
    second = engine.backup(VEID)
    # restic compresses: the busybox root shrinks, random data does not.
    assert 8 * MiB <= second["data_added"] < 9 * MiB, second
    assert second["files_new"] == 1 and second["total_bytes"] > 8 * MiB
    assert first["id"] != second["id"]
    assert [b["id"] for b in engine.backups(VEID)] == [first["id"], second["id"]]


def test_a_damaged_repository_is_found(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    engine.backup(VEID)
    engine.backup_check(read_data=True)  # sound
    packs = sorted(Path(engine.backup_repository().url, "data").rglob("*"),
                   key=lambda p: p.stat().st_size if p.is_file() else 0)
    with open(packs[-1], "r+b") as f:  # the biggest pack: file contents
        f.seek(1000)
        f.write(b"\0" * 64)
    with pytest.raises(ResourceError, match="damaged"):
        engine.backup_check(read_data=True)


def test_backups_refused_where_they_cannot_be(engine_on_xfs):
    engine = engine_on_xfs
    engine.create(VEConfig(VEID + 2, "dir.example", "busybox", Limits(), layout="dir"))
    with pytest.raises(Unsupported, match="disk image"):
        engine.backup(VEID + 2)
    with pytest.raises(NotFound):
        engine.backup(VEID + 3)
    make(engine)
    lock = engine.layout.root / "backups" / "work" / f"{VEID}.lock"
    import fcntl
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(StateError, match="running"):
            engine.backup(VEID)
    finally:
        os.close(fd)
    assert not (engine.layout.root / "backups" / "work" / f"{VEID}.img").exists()


def test_vectl_backup(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    made = json.loads(vectl(engine, "--json", "backup", "create", VEID).stdout)
    listed = json.loads(vectl(engine, "--json", "backup", "list", VEID).stdout)
    assert [b["id"] for b in listed] == [made["id"]]
    assert "etc" in vectl(engine, "backup", "ls", made["id"], "/").stdout
    vectl(engine, "backup", "check")
