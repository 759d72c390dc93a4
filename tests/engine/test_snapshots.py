"""Disk snapshots for real: busybox VEs on image disks, on a host filesystem with
reflinks (XFS, as a node's storage should be) and on one without (ext4, this
machine's own: full copies, said so)."""

import json
import os

import pytest

from ve import Limits, VEConfig
from ve.errors import AlreadyExists, InvalidConfig, NotFound, StateError, Unsupported

from .conftest import vectl, wait_for

MiB = 1 << 20
VEID = 131


def make(engine, layout="image", diskspace=512 * MiB):
    return engine.create(VEConfig(VEID, "snap.example", "busybox",
                                  Limits(diskspace=diskspace, diskinodes=4096), layout=layout))


def sh(engine, script):
    out = engine.exec(VEID, ["sh", "-c", "exec 2>&1; " + script])
    assert out.returncode == 0, out.stdout
    return out.stdout.decode()


def host_free(engine):
    st = os.statvfs(engine.layout.root)
    return st.f_bfree * st.f_frsize


def files(engine):
    return sh(engine, "ls /root").split()


@pytest.mark.parametrize("where", ["engine_on_xfs", "engine"])
def test_a_rollback_brings_back_what_the_snapshot_saw(where, request):
    engine = request.getfixturevalue(where)
    make(engine)
    engine.start(VEID)
    sh(engine, "echo before > /root/A")
    taken = engine.snapshot(VEID, "before-upgrade")
    sh(engine, "echo after > /root/B; rm /root/A")
    assert files(engine) == ["B"]

    done = engine.rollback(VEID, "before-upgrade")

    assert done["restarted"] and engine.status(VEID).state == "running"
    assert files(engine) == ["A"]
    assert sh(engine, "cat /root/A") == "before\n"
    # Reflinked where the host can (milliseconds), a full copy where it cannot.
    assert taken["method"] == ("reflink" if where == "engine_on_xfs" else "copy")
    assert 0 < taken["frozen_ms"] < 1000
    assert [s["name"] for s in engine.snapshots(VEID)] == ["before-upgrade"]


def test_a_snapshot_costs_only_what_changes_after_it(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    sh(engine, "dd if=/dev/urandom of=/root/data bs=1M count=32 2>/dev/null; sync")
    engine.snapshot(VEID, "s1")
    (fresh,) = engine.snapshots(VEID)
    assert fresh["exclusive_bytes"] < 1 * MiB  # every block shared with the image

    # The VE rewrites its 32 MiB in place: the snapshot keeps the old blocks alone.
    sh(engine, "dd if=/dev/urandom of=/root/data bs=1M count=32 conv=notrunc "
               "2>/dev/null; sync")
    (older,) = engine.snapshots(VEID)
    assert 32 * MiB <= older["exclusive_bytes"] < 40 * MiB

    free_before = host_free(engine)
    engine.snapshot_delete(VEID, "s1")
    # XFS frees an unlinked file's blocks in the background.
    assert wait_for(lambda: host_free(engine) - free_before >= 32 * MiB)
    assert engine.snapshots(VEID) == []


def test_a_stopped_ve_is_snapshotted_and_rolled_back_stopped(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    sh(engine, "echo one > /root/A")
    engine.stop(VEID)
    engine.snapshot(VEID, "cold")
    engine.start(VEID)
    sh(engine, "rm /root/A")
    engine.stop(VEID)

    done = engine.rollback(VEID, "cold")

    assert not done["restarted"] and engine.status(VEID).state == "stopped"
    assert engine.disk_usage(VEID).space_used > 0
    engine.start(VEID)
    assert files(engine) == ["A"]


def test_bad_snapshot_requests_change_nothing(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    with pytest.raises(InvalidConfig):
        engine.snapshot(VEID, "../escape")
    with pytest.raises(InvalidConfig):
        engine.snapshot(VEID, "-rf")
    engine.snapshot(VEID, "one")
    with pytest.raises(AlreadyExists):
        engine.snapshot(VEID, "one")
    with pytest.raises(NotFound):
        engine.rollback(VEID, "two")
    with pytest.raises(NotFound):
        engine.snapshot_delete(VEID, "two")
    with pytest.raises(NotFound):
        engine.snapshot(VEID + 1, "one")
    assert sorted(p.name for p in engine.layout.snapshots(VEID).iterdir()) == \
        ["one.img", "one.json"]
    assert engine.status(VEID).state == "running"


def test_a_rollback_the_disk_can_no_longer_hold_is_refused(engine_on_xfs):
    engine = engine_on_xfs
    make(engine, diskspace=512 * MiB)
    engine.start(VEID)
    sh(engine, "dd if=/dev/zero of=/root/big bs=1M count=200 2>/dev/null; sync")
    engine.snapshot(VEID, "big")
    sh(engine, "rm /root/big")
    engine.stop(VEID)
    engine.set(VEID, diskspace=128 * MiB)  # the VE shrank its plan meanwhile

    with pytest.raises(InvalidConfig, match="more than the VE's disk space"):
        engine.rollback(VEID, "big")
    assert engine.status(VEID).state == "stopped"
    engine.start(VEID)
    assert files(engine) == []


def test_a_directory_ve_has_no_snapshots_and_destroy_takes_them_along(engine_on_xfs):
    engine = engine_on_xfs
    engine.create(VEConfig(VEID + 1, "dir.example", "busybox", Limits(), layout="dir"))
    with pytest.raises(Unsupported, match="disk image"):
        engine.snapshot(VEID + 1, "x")
    assert not engine.layout.snapshots(VEID + 1).exists()

    make(engine)
    engine.snapshot(VEID, "kept")
    engine.destroy(VEID)
    assert not engine.layout.snapshots(VEID).exists()


def test_a_ve_whose_move_was_cut_off_is_not_rolled_back(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.snapshot(VEID, "s")
    outgoing = engine.layout.root / "outgoing"
    outgoing.mkdir()
    (outgoing / f"{VEID}.json").write_text(json.dumps({"target": "198.18.9.2:2222",
                                                       "was_running": True}))
    with pytest.raises(StateError, match="cut off"):
        engine.rollback(VEID, "s")


def test_vectl_snapshot(engine_on_xfs):
    engine = engine_on_xfs
    make(engine)
    engine.start(VEID)
    made = json.loads(vectl(engine, "--json", "snapshot", "create", VEID, "nightly").stdout)
    assert made["name"] == "nightly" and made["method"] == "reflink"
    listed = json.loads(vectl(engine, "--json", "snapshot", "list", VEID).stdout)
    assert [s["name"] for s in listed] == ["nightly"]
    assert "nightly" in vectl(engine, "snapshot", "list", VEID).stdout
    vectl(engine, "snapshot", "rollback", VEID, "nightly")
    assert engine.status(VEID).state == "running"
    bad = vectl(engine, "snapshot", "rollback", VEID, check=False)
    assert bad.returncode == 2 and "which snapshot" in bad.stderr
    vectl(engine, "snapshot", "delete", VEID, "nightly")
    assert json.loads(vectl(engine, "--json", "snapshot", "list", VEID).stdout) == []
