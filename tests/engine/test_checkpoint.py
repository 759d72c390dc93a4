"""Checkpoint and restore with criu, on real VEs: what comes back, and what is refused."""

import os
import time

import pytest

from ve import watch
from ve.config import Limits, VEConfig
from ve.kernel import proc
from ve.errors import NotFound, ResourceError, StateError, Unsupported

from .tcpclient import HeldConnection
from .conftest import vectl, wait_for
from .test_watcher import events_of, leftovers, new_init, stopped
from .test_watcher import watcher  # noqa: F401  (fixture)

VEID, ROUTED = 151, (152, "198.18.7.52")
# The count is replaced whole (a reader never sees it half written).
# The count lives on the VE's own /dev/shm (a tmpfs that CRIU dumps with the processes), so
# a file the counter holds open at the dump is restored as it was then, even after the VE
# ran on (a file on the disk it renamed meanwhile could not be reopened on restore).
COUNT_FILE = "/dev/shm/count"
COUNTER = ("i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count.new; "
           "mv /dev/shm/count.new /dev/shm/count; sleep 0.05; done >/dev/null 2>&1 &")


@pytest.fixture
def counting(engine):
    """A running VE with a counter process; its init's host PID."""
    engine.create(VEConfig(VEID, f"ckpt{VEID}", "busybox", Limits()))
    init = engine.start(VEID)
    engine.exec(VEID, ["sh", "-c", COUNTER])
    assert wait_for(lambda: count(engine) > 3, 5)
    return init


def count(engine, veid=VEID):
    out = engine.exec(veid, ["cat", COUNT_FILE]).stdout.strip()
    return int(out) if out else 0


def processes(engine, veid=VEID):
    """{pid inside: command} of the VE's lasting processes: init and its children (not
    what exec runs to look, under its relay, nor the counter's passing forks)."""
    out = engine.exec(veid, ["ps", "-o", "pid,ppid,comm"]).stdout.decode().splitlines()[1:]
    return {pid: comm for pid, ppid, comm in (line.split() for line in out)
            if ppid in ("0", "1") and comm != "vectl-relay"}


def left_on_host(engine, veid=VEID):
    """What a stopped VE must not have on the host: processes, cgroups, a run file."""
    return {"cgroup": engine.cgroups.exists(str(veid)),
            "run file": engine.layout.state(veid).exists()}


def test_hibernate_and_resume_keep_pids_and_a_counting_process(engine, counting):
    before = processes(engine)
    assert sorted(before.values()) == ["init", "sh"], before
    frozen_at = count(engine)
    vectl(engine, "hibernate", VEID)
    assert engine.status(VEID).state == "stopped"
    assert left_on_host(engine) == {"cgroup": False, "run file": False}
    assert engine.hibernated(VEID)
    time.sleep(1)  # 20 counts, were it running
    out = vectl(engine, "resume", VEID).stdout
    assert "restored" in out
    assert processes(engine).keys() == before.keys()  # same PIDs inside
    # It goes on from where it was: not from 0, and onwards.
    resumed = count(engine)
    assert frozen_at <= resumed < frozen_at + 15, (frozen_at, resumed)
    assert wait_for(lambda: count(engine) > resumed + 5, 5)
    assert not engine.hibernated(VEID) and engine.checkpoint_info(VEID) is None


def test_a_checkpoint_leaves_the_ve_running_and_restores_later(engine, counting):
    before = processes(engine)
    done = engine.checkpoint(VEID)
    assert done["bytes"] > 100_000 and done["frozen_ms"] is not None, done
    assert engine.status(VEID).init_pid == counting  # untouched, running on
    ticking = count(engine)
    assert wait_for(lambda: count(engine) > ticking + 5, 5)
    with pytest.raises(StateError, match="running"):
        engine.restore(VEID)
    engine.stop(VEID, fast=True)
    engine.restore(VEID)
    assert processes(engine).keys() == before.keys()


def test_a_hibernated_ve_is_resumed_by_its_start(engine, counting):
    before = processes(engine)
    engine.hibernate(VEID)
    engine.start(VEID)
    assert processes(engine).keys() == before.keys()
    # The restored VE's own clock and exec: it boots again cleanly too.
    uptime = float(engine.exec(VEID, ["cut", "-d", " ", "-f1", "/proc/uptime"]).stdout)
    assert uptime > 0.5
    engine.restart(VEID, timeout=2)
    assert sorted(processes(engine).values()) == ["init"]


def test_a_running_exec_session_is_refused_and_the_ve_runs_on(engine, counting):
    import threading
    session = threading.Thread(target=engine.exec, args=(VEID, ["sleep", "4"]))
    session.start()
    try:
        assert wait_for(lambda: "sleep" in [c for c in processes(engine).values()] or
                        _session_sleeping(engine), 5)
        with pytest.raises(Unsupported, match="not in its init's process tree.*runs on"):
            engine.checkpoint(VEID, stop=True)
    finally:
        session.join()
    assert engine.status(VEID).init_pid == counting
    assert engine.checkpoint_info(VEID) is None
    ticking = count(engine)
    assert wait_for(lambda: count(engine) > ticking + 5, 5)


def _session_sleeping(engine):
    out = engine.exec(VEID, ["ps", "-o", "args"]).stdout.decode()
    return "sleep 4" in out


def test_a_namespace_made_inside_is_refused_by_name(engine, counting):
    engine.exec(VEID, ["sh", "-c", "unshare -n sleep 600 >/dev/null 2>&1 &"])
    assert wait_for(lambda: _session_sleeping_600(engine), 5)
    with pytest.raises(Unsupported, match="net namespace of its own"):
        engine.hibernate(VEID)
    assert engine.status(VEID).init_pid == counting
    assert not engine.hibernated(VEID)


def _session_sleeping_600(engine):
    return "sleep 600" in engine.exec(VEID, ["ps", "-o", "args"]).stdout.decode()


def test_restore_without_a_checkpoint_or_when_criu_fails(engine, counting):
    with pytest.raises(NotFound):
        engine.stop(VEID, fast=True) or engine.restore(VEID)
    engine.start(VEID)
    engine.exec(VEID, ["sh", "-c", COUNTER])
    engine.hibernate(VEID)
    restore_of_a_bad_image_fails_cleanly(engine, "pstree.img")
    assert engine.hibernated(VEID)  # kept for another try
    # Its start then starts it afresh and sets the checkpoint aside.
    engine.start(VEID)
    assert sorted(processes(engine).values()) == ["init"]
    assert not engine.hibernated(VEID)
    assert engine.layout.dump(VEID).with_name(f"{VEID}.failed").is_dir()


def test_a_tcp_connection_from_outside_survives_hibernation(engine, hostnet):
    veid, ip = ROUTED
    engine.create(VEConfig(veid, f"ckpt{veid}", "busybox", Limits(), ips=(ip,)))
    hostnet.engine("print(e.start(v['veid']))", veid=veid)
    engine.exec(veid, ["sh", "-c", "nc -l -p 7000 > /tmp/got 2>&1 &"])
    client = HeldConnection(hostnet.path, ip, 7000)
    try:
        hostnet.engine("e.hibernate(v['veid'])\nprint('null')", veid=veid)
        assert veth_count(hostnet, veid) == 0  # its network went with it
        time.sleep(0.5)
        hostnet.engine("print(e.start(v['veid']))", veid=veid)
        assert client.finish(), "the connection did not survive"
    finally:
        client.close()
    assert wait_for(lambda: engine.exec(veid, ["cat", "/tmp/got"]).stdout == b"before\nafter\n",
                    5), engine.exec(veid, ["cat", "/tmp/got"])
    assert hostnet.run("busybox", "ping", "-c", "1", "-W", "2", ip, check=False).returncode == 0


def veth_count(hostnet, veid):
    return sum(f"veth{veid}" in line or f"vr{veid}" in line
               for line in hostnet.run("ip", "-o", "link").stdout.splitlines())


def test_a_watched_ves_sysinfo_still_works_after_restore(engine, watcher):
    """Its seccomp notifications cannot be saved: they are let through after restore.
    (Without that, sysinfo in a restored process fails with ENOSYS: `free` fails.)"""
    engine.create(VEConfig(VEID, f"ckpt{VEID}", "busybox", Limits()))
    engine.start(VEID)
    assert engine._running_init(VEID).watched
    # A process of the VE from before the checkpoint runs free when asked to.
    engine.exec(VEID, ["sh", "-c", "while :; do if [ -e /tmp/go ]; then free >/tmp/free.out "
                                   "2>&1; echo $? >/tmp/free.rc; rm /tmp/go; fi; sleep 0.1; "
                                   "done >/dev/null 2>&1 &"])
    engine.hibernate(VEID)
    engine.start(VEID)
    engine.exec(VEID, ["touch", "/tmp/go"])
    assert wait_for(lambda: engine.exec(VEID, ["cat", "/tmp/free.rc"]).returncode == 0, 5)
    out = engine.exec(VEID, ["cat", "/tmp/free.rc", "/tmp/free.out"]).stdout.decode()
    mem = next(line.split()[1:] for line in out.splitlines() if line.startswith("Mem:"))
    with open("/proc/meminfo") as f:
        host_kib = int(f.readline().split()[1])
    # (With a failed sysinfo, busybox prints what its stack held: digits run together.)
    assert len(mem) == 6 and 0 < int(mem[0]) <= host_kib, out


def zombie_children(pid):
    """The ended, uncollected children of ``pid``."""
    return [child for child in proc.children(pid) if proc.is_zombie(child)]


def restore_of_a_bad_image_fails_cleanly(engine, image, match="restore failed"):
    """Spoil checkpoint ``image`` of the hibernated VE: its restore fails with a clear
    error and leaves nothing running."""
    (engine.layout.dump(VEID) / image).write_bytes(b"not an image")
    with pytest.raises(ResourceError, match=match):
        engine.restore(VEID)
    assert engine.status(VEID).state == "stopped"
    assert left_on_host(engine) == {"cgroup": False, "run file": False}


def restored_by_the_watcher(engine, watcher):
    """Hibernate and resume the VE; return (its restored init, the watcher's PID)."""
    engine.create(VEConfig(VEID, f"ckpt{VEID}", "busybox", Limits()))
    engine.start(VEID)
    engine.hibernate(VEID)
    init = engine.start(VEID)
    assert not engine._running_init(VEID).watched  # no notifier came back with it
    serving = watch.request(engine.layout, {"op": "ping"})["pid"]
    assert proc.parent(init) == serving, watcher.output()
    return init, serving


def test_a_restored_ve_that_reboots_inside_comes_back(engine, watcher):
    """Without a notifier its reboot(2) goes unseen; its parent, the watcher, learns
    from the kernel that init was ended by a restart, and starts it again."""
    init, serving = restored_by_the_watcher(engine, watcher)
    engine.exec(VEID, ["sh", "-c", "echo kept > /root/marker"])
    assert engine.exec(VEID, ["reboot"]).returncode == 0
    again = new_init(engine, VEID, init)
    assert again, watcher.output()
    assert engine.exec(VEID, ["cat", "/root/marker"]).stdout == b"kept\n"
    assert wait_for(lambda: events_of(engine, VEID), 10)  # written once it runs again
    (event,) = events_of(engine, VEID)
    assert (event["reason"], event["restarted"], event["init_pid"], event["new_pid"]) == \
        ("reboot", True, init, again)
    # Started afresh, it has its notifier again.
    assert engine._running_init(VEID).watched
    assert zombie_children(serving) == []


def test_a_restored_ve_that_powers_off_inside_stays_off(engine, watcher):
    init, serving = restored_by_the_watcher(engine, watcher)
    assert engine.exec(VEID, ["poweroff"]).returncode == 0
    assert stopped(engine, VEID)
    assert wait_for(lambda: not leftovers(engine, VEID), 10), leftovers(engine, VEID)
    assert wait_for(lambda: events_of(engine, VEID), 10)  # written once all is clean
    (event,) = events_of(engine, VEID)
    assert (event["reason"], event["restarted"], event["init_pid"]) == ("poweroff", False, init)
    assert zombie_children(serving) == []


def test_a_restored_ve_killed_on_the_host_is_a_crash_and_collected(engine, watcher):
    init, serving = restored_by_the_watcher(engine, watcher)
    os.kill(init, 9)
    assert stopped(engine, VEID)
    assert wait_for(lambda: [e["reason"] for e in events_of(engine, VEID)] == ["crash"], 10)
    # One stopped by the host is collected too (no zombie left with the watcher).
    engine.start(VEID)
    engine.hibernate(VEID)
    again = engine.start(VEID)
    assert proc.parent(again) == serving
    engine.stop(VEID, timeout=2)
    assert wait_for(lambda: zombie_children(serving) == [], 5), zombie_children(serving)
    assert events_of(engine, VEID)[-1]["reason"] == "crash"  # a stop is no event


def test_a_restored_init_that_dies_before_the_watcher_watches_it_is_a_crash(engine, watcher):
    """The watcher reaps any VE init of its own that ended (its orphan collector) even
    one it does not watch yet: its run file came late, or an earlier reap of the VE
    kept the watcher from looking. How it ended must still be told."""
    init, serving = restored_by_the_watcher(engine, watcher)
    run_file = engine.layout.state(VEID)
    aside = engine.layout.root / "run-file-aside"
    run_file.rename(aside)  # as if the engine had yet to record the restored VE
    assert wait_for(lambda: VEID not in watch.request(engine.layout, {"op": "status"})["ves"],
                    10)
    os.kill(init, 9)
    # collected by the watcher while unwatched (a zombie still has its /proc entry)
    assert wait_for(lambda: not os.path.exists(f"/proc/{init}"), 10)
    aside.rename(run_file)
    assert stopped(engine, VEID)
    assert wait_for(lambda: events_of(engine, VEID), 10)
    assert [e["reason"] for e in events_of(engine, VEID)] == ["crash"]
    assert wait_for(lambda: not leftovers(engine, VEID), 10), leftovers(engine, VEID)


def test_a_restore_the_watcher_runs_fails_cleanly(engine, watcher):
    """criu fails in the watcher's hands: the same clear error, nothing left over."""
    engine.create(VEConfig(VEID, f"ckpt{VEID}", "busybox", Limits()))
    engine.start(VEID)
    engine.hibernate(VEID)
    restore_of_a_bad_image_fails_cleanly(engine, "core-1.img", "restore failed: .*core-1.img")
    serving = watch.request(engine.layout, {"op": "ping"})["pid"]
    assert wait_for(lambda: zombie_children(serving) == [], 5), zombie_children(serving)


def test_a_restore_whose_engine_dies_is_ended_by_the_watcher(engine, watcher):
    """The engine that asked for the restore is killed before it hears back (a move's
    receiver, say): nobody records the VE as running and the move may be rolled back
    at the source, so the watcher ends the VE it restored (never two copies)."""
    import subprocess
    import sys
    from .conftest import ROOT_DIR
    engine.create(VEConfig(VEID, f"ckpt{VEID}", "busybox", Limits()))
    engine.start(VEID)
    engine.hibernate(VEID)
    code = (
        "import json, os, socket\n"
        "from ve import Engine, watch\n"
        f"e = Engine(root={str(engine.layout.root)!r}, "
        f"cgroup_parent={engine.cgroups.parent!r})\n"
        "def ask_and_die(layout, veid, criu, peer, netns_id, timeout, console=None,\n"
        "                idmap_base=0):\n"
        "    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        "    sock.connect(str(watch.socket_path(layout)))\n"
        "    sock.send(json.dumps({'op': 'restore', 'veid': veid, 'criu': str(criu),\n"
        "                          'veth_peer': peer, 'netns': netns_id,\n"
        "                          'console': console, 'idmap_base': idmap_base}).encode())\n"
        "    os._exit(137)\n"
        "watch.restore = ask_and_die\n"
        f"e.restore({VEID})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT_DIR)), timeout=60)
    assert out.returncode == 137, out.stderr
    assert wait_for(lambda: "the client of the restore is gone" in watcher.output(), 20), \
        watcher.output()
    assert "its restored init" in watcher.output()  # criu did restore it
    assert wait_for(lambda: engine.cgroups.pids(str(VEID)) == [], 10)
    serving = watch.request(engine.layout, {"op": "ping"})["pid"]
    assert wait_for(lambda: zombie_children(serving) == [], 5), zombie_children(serving)
    assert engine.status(VEID).state == "stopped"
    engine.destroy(VEID)
    assert left_on_host(engine) == {"cgroup": False, "run file": False}


@pytest.fixture
def other_node(engine, tmp_path):
    """A second engine on this machine: its own VE_ROOT and cgroup parent (another node)."""
    import shutil
    import uuid
    from ve import Engine
    from .conftest import _remove_cgroup_tree
    top = f"vetest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "other"
    (root / "template" / "cache").mkdir(parents=True)
    for item in (engine.layout.cache_dir).iterdir():
        shutil.copy2(item, root / "template" / "cache" / item.name)
    other = Engine(root=str(root), cgroup_parent=f"{top}/ve")
    yield other
    for veid in other.layout.veids():
        other.destroy(veid, timeout=2)
    _remove_cgroup_tree(top)


def test_a_checkpoint_restores_under_another_nodes_root_and_cgroups(engine, counting,
                                                                     other_node):
    """What a migration does once the files are there: the VE's config, disk and
    checkpoint under another VE_ROOT, restored into that node's cgroup parent."""
    import shutil
    before = processes(engine)
    ticking = count(engine)
    engine.hibernate(VEID)
    cfg = engine._read_config(VEID)
    other_node.layout.ensure()
    for source, target in ((engine.layout.conf(VEID), other_node.layout.conf(VEID)),):
        shutil.copy2(source, target)
    for src, dst in ((engine.layout.image(VEID), other_node.layout.image(VEID)),
                     (engine.layout.private(VEID), other_node.layout.private(VEID)),
                     (engine.layout.dump(VEID), other_node.layout.dump(VEID))):
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True)
            shutil.copystat(src, dst)
        elif src.exists():
            shutil.copy2(src, dst)
    other_node.layout.mountpoint(VEID).mkdir(mode=0o700, exist_ok=True)
    assert cfg.layout == other_node._read_config(VEID).layout
    engine.destroy(VEID)
    pid = other_node.restore(VEID)
    assert pid in other_node.cgroups.pids(str(VEID))
    assert f"/{other_node.cgroups.parent}/{VEID}" in open(f"/proc/{pid}/cgroup").read()
    assert processes(other_node).keys() == before.keys()
    assert count(other_node) >= ticking
