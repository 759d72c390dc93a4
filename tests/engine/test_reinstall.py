"""Reinstall for real: a fresh root from a template, the VE's settings kept."""

import os

import pytest

from ve.errors import InvalidConfig, NotFound

from .test_network import A, HOST_V4, make, ping

MiB = 1 << 20


def run(hostnet, code, **values):
    return hostnet.engine(code, **values)


def inside(engine, script, veid=401):
    out = engine.exec(veid, ["sh", "-c", "exec 2>&1; " + script])
    return out.returncode, out.stdout.decode()


def test_reinstall_keeps_addresses_limits_and_name_and_gives_a_fresh_root(engine, hostnet):
    make(engine, A, limits={"ram": 128 * MiB, "diskspace": 64 * MiB, "diskinodes": 8192,
                            "numproc": 300})
    old_pid = run(hostnet, "print(e.start(401))")
    inside(engine, "echo mine > /root/marker && rm /bin/vi")
    before = engine.config(401)
    new_pid = run(hostnet, "e.reinstall(401)\nprint(e.status(401).init_pid)")
    assert new_pid != old_pid and engine.status(401).state == "running"
    assert inside(engine, "cat /root/marker")[0] != 0  # a fresh root
    assert inside(engine, "test -x /bin/vi")[0] == 0
    assert engine.config(401) == before  # same template, addresses, limits, name
    assert ping(engine, 401, HOST_V4)  # its addresses work
    assert inside(engine, "hostname")[1].strip() == "ve401.example"
    assert engine.status(401).ram_limit == 128 * MiB
    assert 56 * MiB < engine.disk_usage(401).space_total <= 64 * MiB


def test_reinstall_can_keep_the_old_root_inside_the_new_one(engine, hostnet):
    make(engine, A)
    run(hostnet, "e.start(401)\nprint('null')")
    inside(engine, "echo mine > /root/marker")
    run(hostnet, "e.reinstall(401, keep_old_as='old-root')\nprint('null')")
    assert inside(engine, "cat /old-root/root/marker")[1].strip() == "mine"
    assert inside(engine, "test -e /root/marker")[0] != 0
    listing = inside(engine, "ls -ld /old-root")[1]
    assert listing.startswith("drwx------") and " root " in listing  # VE root's, not host's
    assert not any(name.startswith(".reinstall") for name in os.listdir(engine.layout.private(401)))


def test_a_failed_reinstall_leaves_the_old_root_and_a_running_ve(engine, hostnet):
    make(engine, A)
    old_pid = run(hostnet, "print(e.start(401))")
    inside(engine, "echo mine > /root/marker")
    cache = engine.layout.cache_dir
    (cache / "broken.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(NotFound):  # nothing stops for a template that is not there
        engine.reinstall(401, template="nosuch")
    with pytest.raises(InvalidConfig, match="bad name"):
        engine.reinstall(401, keep_old_as="../escape")
    assert engine.status(401).init_pid == old_pid
    out = run(hostnet, """
        try:
            e.reinstall(401, template='broken')
        except Exception as exc:
            print(json.dumps(type(exc).__name__))""")
    assert out in ("ResourceError", "InvalidConfig")
    assert engine.status(401).state == "running"
    assert inside(engine, "cat /root/marker")[1].strip() == "mine"
    assert engine.config(401).template == "busybox"
    assert not any(name.startswith(".reinstall") for name in os.listdir(engine.layout.private(401)))


def test_reinstall_of_a_directory_layout_ve(engine):
    from ve import Limits, VEConfig
    engine.create(VEConfig(401, "ve401.example", "busybox", Limits(), layout="dir"))
    private = engine.layout.private(401)
    (private / "root" / "marker").write_text("mine")
    engine.reinstall(401, keep_old_as="previous")
    assert not (private / "root" / "marker").exists()
    assert (private / "previous" / "root" / "marker").read_text() == "mine"
    assert engine.status(401).state == "stopped"


def _dir_ve(engine):
    from ve import Limits, VEConfig
    engine.create(VEConfig(401, "ve401.example", "busybox", Limits(), layout="dir"))
    private = engine.layout.private(401)
    (private / "root" / "marker").write_text("mine")
    return private


def test_a_reinstall_interrupted_while_moving_the_old_root_is_undone_at_start(engine):
    import json
    private = _dir_ve(engine)
    before = sorted(os.listdir(private))
    # As a crash half-way through step 1 leaves it: some entries moved, journal says "old".
    old = private / ".reinstall-abc-old"
    old.mkdir(mode=0o700)
    for name in ("root", "etc"):
        (private / name).rename(old / name)
    engine._journal(401).write_text(json.dumps({"tag": "abc", "phase": "old", "keep": None}))
    engine.start(401)
    assert sorted(os.listdir(private)) == before
    assert (private / "root" / "marker").read_text() == "mine"
    assert not engine._journal(401).exists()


def test_a_reinstall_interrupted_after_the_swap_keeps_the_new_root(engine):
    import json
    private = _dir_ve(engine)
    old = private / ".reinstall-abc-old"
    old.mkdir(mode=0o700)
    (private / "root").rename(old / "root")
    (private / "root").mkdir()  # the new tree's
    engine._journal(401).write_text(json.dumps({"tag": "abc", "phase": "done", "keep": None}))
    engine.start(401)
    assert not old.exists() and not (private / "root" / "marker").exists()


def test_entries_named_like_ours_in_the_ve_are_left_alone(engine):
    private = _dir_ve(engine)
    (private / ".reinstall-old").mkdir()
    (private / ".reinstall-old" / "keep-me").write_text("x")
    engine.reinstall(401, keep_old_as="previous")
    assert (private / "previous" / ".reinstall-old" / "keep-me").read_text() == "x"
    assert (private / "previous" / "root" / "marker").read_text() == "mine"


def test_a_retried_reinstall_with_the_same_token_is_not_done_twice(engine):
    private = _dir_ve(engine)
    engine.reinstall(401, keep_old_as="old-root", token="op-7")
    (private / "root" / "new-file").write_text("after")
    engine.reinstall(401, keep_old_as="old-root", token="op-7")  # a redelivery
    assert (private / "root" / "new-file").read_text() == "after"
    assert (private / "old-root" / "root" / "marker").read_text() == "mine"
    with pytest.raises(Exception, match="already has /old-root"):
        engine.reinstall(401, keep_old_as="old-root", token="op-8")


def test_a_very_deep_tree_does_not_stop_a_reinstall(engine):
    private = _dir_ve(engine)
    fd = os.open(private / "root", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # deeper than Python's recursion limit
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    engine.reinstall(401)
    assert not (private / "root" / "d").exists()
    assert not any(name.startswith(".reinstall") for name in os.listdir(private))
