"""Migration between two nodes on this machine, as between two machines.

Each node has its own VE_ROOT, cgroup parent and network namespace; a third
namespace is the data-centre segment (a bridge) both nodes' uplinks join, with a
client on it. A node announces its VEs' addresses there by proxy ARP (the
engine's VE_NET_UPLINK), so the client reaches a VE at whichever node runs it.
VEs move over the target node's migration sshd (`vectl migration serve`), with
keys exchanged the way the dashboard does it (the nodes: ``nodes.py``, which
bench/migration.py uses too).
"""

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from ve import Engine, watch
from ve.config import Limits, VEConfig
from ve.errors import StateError
from ve.kernel import proc

from .tcpclient import HeldConnection
from .test_checkpoint import COUNT_FILE, COUNTER
from .test_watcher import events_of, new_init, stopped
from .conftest import ROOT_DIR, _remove_cgroup_tree, wait_for
from .nodes import DC_NET, PORT, UPLINK, reaches, two_nodes

VE_IP = f"{DC_NET}.50"
VEID = 161


@pytest.fixture
def fleet(engine, tmp_path, monkeypatch):
    """Nodes A (this test's engine) and B on one data-centre bridge with a client."""
    yield from _fleet(engine, tmp_path, monkeypatch)


@pytest.fixture
def watched_fleet(engine, tmp_path, monkeypatch):
    """``fleet`` whose nodes start their watchers as in production (VE_WATCH=auto)."""
    monkeypatch.setenv("VE_WATCH", "auto")
    yield from _fleet(engine, tmp_path, monkeypatch)


def _fleet(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("VE_NET_UPLINK", UPLINK)
    top = f"vetest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "node-b"
    (root / "template" / "cache").mkdir(parents=True)
    for item in engine.layout.cache_dir.iterdir():
        shutil.copy2(item, root / "template" / "cache" / item.name)
    try:
        with two_nodes(engine, Engine(root=str(root), cgroup_parent=f"{top}/ve")) as nodes:
            yield nodes
    finally:
        _remove_cgroup_tree(top)


def on_host(node, veid):
    """What a node has of the VE: files, cgroup, links, routes, proxy entries, loop
    devices on its image."""
    layout = node.engine.layout
    return {
        "files": [str(p) for p in (layout.conf(veid), layout.private(veid), layout.image(veid),
                                   layout.dump(veid), layout.snapshots(veid))
                  if os.path.lexists(p)],
        "cgroup": node.engine.cgroups.exists(str(veid)),
        "link": f"veth{veid}" in node.net.run("ip", "-o", "link").stdout,
        "route": VE_IP in node.net.run("ip", "route").stdout,
        "proxy": VE_IP in node.net.run("ip", "neigh", "show", "proxy").stdout,
        "loop": _loop_devices_of(layout.image(veid)),
    }


def _loop_devices_of(image):
    found = []
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                if f.read().strip().startswith(str(image)):
                    found.append(name)
        except OSError:
            continue
    return found


NOTHING = {"files": [], "cgroup": False, "link": False, "route": False, "proxy": False,
           "loop": []}


def test_live_migration_keeps_processes_addresses_and_a_tcp_connection(fleet):
    a, b, dc = fleet
    a.engine.create(VEConfig(VEID, "moving.example", "busybox", Limits(), ips=(VE_IP,)))
    a.net.engine("print(e.start(v['veid']))", veid=VEID)
    a.engine.exec(VEID, ["sh", "-c", COUNTER])
    a.engine.exec(VEID, ["sh", "-c", "nc -l -p 7000 > /tmp/got 2>&1 &"])
    assert wait_for(lambda: reaches(dc, VE_IP), 10)
    client = HeldConnection(dc.path, VE_IP, 7000)
    try:
        pids = a.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
        assert all(on_host(a, VEID)[what] for what in ("files", "cgroup", "link", "route",
                                                         "proxy", "loop"))  # it can fail
        done = a.vectl("migrate", VEID, "--to", f"{b.address}:{PORT}")
        assert done["mode"] == "live" and done["downtime_s"] < done["total_s"], done
        # Same PIDs inside (looked at while nc still holds the connection: it ends with it).
        now = b.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
        assert _lasting(now) == _lasting(pids), (pids, now)
        assert client.finish(), "the connection did not survive"
    finally:
        client.close()
    assert on_host(a, VEID) == NOTHING
    assert b.engine.status(VEID).state == "running"
    assert wait_for(lambda: reaches(dc, VE_IP), 10)  # announced by B now
    got = b.engine.exec(VEID, ["cat", "/tmp/got"]).stdout
    assert got == b"before\nafter\n", got
    counted = int(b.engine.exec(VEID, ["cat", COUNT_FILE]).stdout)
    assert wait_for(lambda: int(b.engine.exec(VEID, ["cat", COUNT_FILE]).stdout) > counted, 5)


def test_a_moved_ve_reboots_and_powers_off_from_inside_at_its_new_node(watched_fleet):
    """A restored VE has no seccomp notifier: the target's watcher restores it, is its
    init's parent and tells its reboot from its power-off by how init ended."""
    a, b, dc = watched_fleet
    a.engine.create(VEConfig(VEID, "reboots.example", "busybox", Limits(), ips=(VE_IP,)))
    a.net.engine("print(e.start(v['veid']))", veid=VEID)
    assert a.vectl("migrate", VEID, "--to", b.target())["mode"] == "live"
    init = b.engine.status(VEID).init_pid
    assert proc.parent(init) == watch.request(b.engine.layout, {"op": "ping"})["pid"]
    assert b.engine.exec(VEID, ["reboot"]).returncode == 0
    again = new_init(b.engine, VEID, init)
    assert again, (b.engine.layout.root / "watcher.log").read_text()[-2000:]
    assert wait_for(lambda: events_of(b.engine, VEID), 10)
    assert [(e["reason"], e["restarted"]) for e in events_of(b.engine, VEID)] == \
        [("reboot", True)]
    assert wait_for(lambda: reaches(dc, VE_IP), 10)  # still announced by B
    # Moved back to A, then powered off there: it stays off, and A keeps nothing running.
    assert b.vectl("migrate", VEID, "--to", a.target())["mode"] == "live"
    init = a.engine.status(VEID).init_pid
    assert proc.parent(init) == watch.request(a.engine.layout, {"op": "ping"})["pid"]
    assert a.engine.exec(VEID, ["poweroff"]).returncode == 0
    assert stopped(a.engine, VEID)
    assert wait_for(lambda: [e["reason"] for e in events_of(a.engine, VEID)] == ["poweroff"],
                    10)
    assert wait_for(lambda: not on_host(a, VEID)["cgroup"], 10)


def _lasting(ps):
    """The (pid, command) rows of init and its children (not the counter's passing forks,
    nor what exec runs to look, under its relay)."""
    rows = (line.split() for line in ps.splitlines()[1:])
    return sorted((pid, comm) for pid, ppid, comm in rows
                  if ppid in ("0", "1") and comm != "vectl-relay")


def test_offline_migration_of_a_stopped_and_a_running_ve(fleet):
    a, b, dc = fleet
    a.engine.create(VEConfig(VEID, "offline.example", "busybox", Limits(), ips=(VE_IP,),
                             layout="dir"))
    done = a.vectl("migrate", VEID, "--to", f"{b.address}:{PORT}")
    assert done["mode"] == "offline" and done["downtime_s"] is None
    assert b.engine.status(VEID).state == "stopped" and on_host(a, VEID) == NOTHING
    b.net.engine("print(e.start(v['veid']))", veid=VEID)
    done = b.vectl("migrate", VEID, "--to", f"{a.address}:{PORT}", "--offline")
    assert done["mode"] == "offline" and done["why_offline"] == "asked for"
    assert a.engine.status(VEID).state == "running" and on_host(b, VEID) == NOTHING
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


def test_a_stopped_ve_can_be_started_at_its_new_node(fleet):
    """A VE made on one node to run on another (a VPS restored from that node's backups)."""
    a, b, dc = fleet
    a.engine.create(VEConfig(VEID, "made-here.example", "busybox", Limits(), ips=(VE_IP,)))
    done = a.vectl("migrate", VEID, "--to", f"{b.address}:{PORT}", "--start")
    assert done["mode"] == "offline" and done["downtime_s"] is None
    assert b.engine.status(VEID).state == "running" and on_host(a, VEID) == NOTHING
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


def test_snapshots_move_with_their_ve_and_roll_back_at_the_new_node(fleet):
    a, b, dc = fleet
    a.engine.create(VEConfig(VEID, "snapped.example", "busybox", Limits(), ips=(VE_IP,)))
    a.net.engine("print(e.start(v['veid']))", veid=VEID)
    a.engine.exec(VEID, ["sh", "-c", "echo first > /root/A"])
    a.engine.snapshot(VEID, "first")
    a.engine.exec(VEID, ["sh", "-c", "echo second > /root/B; rm /root/A"])
    a.engine.snapshot(VEID, "second")
    a.net.engine("e.stop(v['veid'])\nprint('null')", veid=VEID)

    done = a.vectl("migrate", VEID, "--to", f"{b.address}:{PORT}")

    assert done["mode"] == "offline" and on_host(a, VEID) == NOTHING
    assert [s["name"] for s in b.engine.snapshots(VEID)] == ["first", "second"]
    b.engine.rollback(VEID, "first")
    b.net.engine("print(e.start(v['veid']))", veid=VEID)
    assert b.engine.exec(VEID, ["ls", "/root"]).stdout.split() == [b"A"]


def test_a_refused_move_leaves_the_ve_running_where_it_was(fleet):
    """The target has a VE with this VEID already: refused before anything stops."""
    a, b, dc = fleet
    for node in (a, b):
        node.engine.create(VEConfig(VEID, "twice.example", "busybox", Limits()))
    init = a.engine.start(VEID)
    env = dict(os.environ, VE_ROOT=str(a.engine.layout.root),
               VE_CGROUP_PARENT=a.engine.cgroups.parent, PYTHONPATH=str(ROOT_DIR))
    out = a.net.run(sys.executable, "-m", "ve.cli", "migrate", str(VEID), "--to",
                    f"{b.address}:{PORT}", env=env, check=False)
    assert out.returncode != 0 and "already exists" in out.stderr, out.stderr
    assert a.engine.status(VEID).init_pid == init
    assert b.engine.status(VEID).state == "stopped"


def test_a_failed_restore_at_the_target_brings_the_ve_back(fleet, monkeypatch):
    """The target's criu is missing: the VE is restored where it was, and the target
    keeps nothing of it."""
    a, b, dc = fleet
    with monkeypatch.context() as only_b:
        only_b.setenv("VE_CRIU", "/nonexistent/criu")
        b.vectl("migration", "allow", a.vectl("migration", "key")["key"])
    a.engine.create(VEConfig(VEID, "back.example", "busybox", Limits(), ips=(VE_IP,)))
    a.net.engine("print(e.start(v['veid']))", veid=VEID)
    a.engine.exec(VEID, ["sh", "-c", "sleep 900 >/dev/null 2>&1 &"])
    before = a.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    env = dict(os.environ, VE_ROOT=str(a.engine.layout.root),
               VE_CGROUP_PARENT=a.engine.cgroups.parent, PYTHONPATH=str(ROOT_DIR))
    out = a.net.run(sys.executable, "-m", "ve.cli", "migrate", str(VEID), "--to",
                    f"{b.address}:{PORT}", env=env, check=False)
    assert out.returncode != 0 and "back on this node" in out.stderr, out.stderr
    assert a.engine.status(VEID).state == "running"
    after = a.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    assert _lasting(after) == _lasting(before)
    assert on_host(b, VEID) == NOTHING
    assert not os.path.exists(b.engine.layout.root / "incoming" / str(VEID))
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


def _mover_dies_at(node, step, target):
    """Run ``migrate`` on ``node`` in a process that dies (as by kill -9: no clean-up,
    no finally) when it reaches the engine step ``step``."""
    code = (f"import os\ne.{step} = lambda *a, **k: os._exit(137)\n"
            f"e.migrate(v['veid'], v['to'])\n")
    prelude = (f"from ve import Engine\ne = Engine(root={str(node.engine.layout.root)!r}, "
               f"cgroup_parent={node.engine.cgroups.parent!r})\n"
               f"v = {{'veid': {VEID}, 'to': {target!r}}}\n")
    out = node.net.run(sys.executable, "-c", prelude + code,
                       env=dict(os.environ, PYTHONPATH=str(ROOT_DIR)), check=False)
    assert out.returncode == 137, out.stderr


def _running_counter(a, dc, hostname):
    a.engine.create(VEConfig(VEID, hostname, "busybox", Limits(), ips=(VE_IP,)))
    a.net.engine("print(e.start(v['veid']))", veid=VEID)
    a.engine.exec(VEID, ["sh", "-c", COUNTER])
    assert wait_for(lambda: reaches(dc, VE_IP), 10)
    return a.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()


def test_a_mover_killed_once_the_target_runs_the_ve_is_finished_there(fleet):
    """Killed after the target restored the VE, before the source let go of its copy:
    the next migrate finds the move done and removes the copy (never two VEs)."""
    a, b, dc = fleet
    before = _running_counter(a, dc, "killed-late.example")
    target = f"{b.address}:{PORT}"
    _mover_dies_at(a, "_destroy", target)
    assert a.engine.migration_in_flight(VEID) == {"target": target, "was_running": True}
    assert b.engine.status(VEID).state == "running"
    done = a.vectl("migrate", VEID, "--to", target)
    assert done["mode"] == "settled", done
    assert on_host(a, VEID) == NOTHING and a.engine.migration_in_flight(VEID) is None
    after = b.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    assert _lasting(after) == _lasting(before)
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


@pytest.mark.parametrize("step", ["_send_disk", "_checkpoint"])
def test_a_mover_killed_before_the_freeze_leaves_the_ve_running_and_the_next_move_works(
        fleet, step):
    """Killed while copying the disk of the running VE, or just before freezing it: the
    VE never stopped; the next migrate settles the cut-off move (the target forgets
    what it got) and moves it."""
    a, b, dc = fleet
    before = _running_counter(a, dc, f"killed{step.replace('_', '-')}.example")
    init = a.engine.status(VEID).init_pid
    target = f"{b.address}:{PORT}"
    _mover_dies_at(a, step, target)
    assert a.engine.status(VEID).init_pid == init
    assert a.engine.migration_in_flight(VEID) == {"target": target, "was_running": True}
    done = a.vectl("migrate", VEID, "--to", target)
    assert done["mode"] == "live", done
    assert on_host(a, VEID) == NOTHING and b.engine.status(VEID).state == "running"
    after = b.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    assert _lasting(after) == _lasting(before)
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


def test_a_mover_killed_while_the_ve_is_frozen_rolls_back(fleet):
    """Killed between the checkpoint and the target's restore: settling brings the VE
    back here from its checkpoint, same processes, and the target forgets it."""
    a, b, dc = fleet
    before = _running_counter(a, dc, "killed-early.example")
    _mover_dies_at(a, "_send_state", f"{b.address}:{PORT}")
    assert a.engine.status(VEID).state == "stopped" and a.engine.hibernated(VEID)
    with pytest.raises(StateError, match="cut off"):  # it might run at the target
        a.engine.start(VEID)
    assert os.path.exists(b.engine.layout.root / "incoming" / str(VEID))
    assert a.vectl("migration", "settle", VEID)["settled"] == "here"
    assert a.engine.status(VEID).state == "running"
    after = a.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    assert _lasting(after) == _lasting(before)
    assert on_host(b, VEID) == NOTHING
    assert not os.path.exists(b.engine.layout.root / "incoming" / str(VEID))
    assert a.vectl("migration", "settle", VEID)["settled"] is None
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


def test_a_hibernated_ve_moves_with_its_saved_memory(fleet):
    """Stopped but hibernated at A: it moves offline (nothing runs), its image goes along,
    and its start at B resumes its processes."""
    a, b, dc = fleet
    before = _running_counter(a, dc, "hibernated.example")
    a.net.engine("print(json.dumps(e.hibernate(v['veid'])))", veid=VEID)
    done = a.vectl("migrate", VEID, "--to", f"{b.address}:{PORT}")
    assert done["mode"] == "offline" and done["downtime_s"] is None, done
    assert on_host(a, VEID) == NOTHING and b.engine.hibernated(VEID)
    b.net.engine("print(e.start(v['veid']))", veid=VEID)
    after = b.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    assert _lasting(after) == _lasting(before)
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


def _migrate_patched(a, b, patch):
    """Move the VE from A to B in a process that first runs ``patch`` (Python, with the
    engine as ``e``); return the finished process."""
    prelude = (f"from ve import Engine\ne = Engine(root={str(a.engine.layout.root)!r}, "
               f"cgroup_parent={a.engine.cgroups.parent!r})\n")
    return a.net.run(sys.executable, "-c", prelude + patch +
                     f"e.migrate({VEID}, '{b.address}:{PORT}')\n",
                     env=dict(os.environ, PYTHONPATH=str(ROOT_DIR)), check=False)


def _cut_link(b):
    """Python that takes B's data-centre link down."""
    return (f"import subprocess\nsubprocess.run(['nsenter', '--net={b.net.path}', 'ip', "
            f"'link', 'set', 'dc0', 'down'], check=True)\n")


@pytest.mark.parametrize("when", ["dumping", "sending the state"])
def test_a_network_cut_while_the_ve_is_frozen_brings_it_back_at_the_source(fleet, when):
    """The data-centre link of the target goes down while the pages go ahead of the dump,
    or after the checkpoint: the copy fails, the VE is restored at the source with its
    processes, and once the link is back the next move works (the target's leftovers do
    not stand in the way)."""
    a, b, dc = fleet
    before = _running_counter(a, dc, "cut.example")
    if when == "dumping":  # the pages stream stalls mid-way; criu's dump goes on here
        cut = ("_checkpoint = e._checkpoint\n"
               "def cut_while_dumping(veid, stop, dumping=None):\n"
               "    def started(path):\n"
               "        dumping(path)\n"
               + "".join(f"        {line}\n" for line in _cut_link(b).splitlines()) +
               "    return _checkpoint(veid, stop, dumping=started)\n"
               "e._checkpoint = cut_while_dumping\n")
    else:
        cut = ("_send_state = e._send_state\n"
               "def cut_then_send(*args, **kwargs):\n"
               + "".join(f"    {line}\n" for line in _cut_link(b).splitlines()) +
               "    return _send_state(*args, **kwargs)\n"
               "e._send_state = cut_then_send\n")
    out = _migrate_patched(a, b, cut)
    assert out.returncode != 0 and "back on this node" in out.stderr, out.stderr
    assert ("could not go ahead" in out.stderr) == (when == "dumping"), out.stderr
    assert a.engine.status(VEID).state == "running"
    after = a.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    assert _lasting(after) == _lasting(before)
    assert a.engine.migration_in_flight(VEID) is None
    assert not b.engine.layout.conf(VEID).exists()
    # The target gives up on the source it cannot hear (its sshd's keepalives).
    assert wait_for(lambda: not _receivers(b), 40), "the target's receiver waits on"
    b.net.run("ip", "link", "set", "dc0", "up")
    assert wait_for(lambda: reaches(dc, b.address), 10)
    done = a.vectl("migrate", VEID, "--to", f"{b.address}:{PORT}")
    assert done["mode"] == "live" and b.engine.status(VEID).state == "running"
    assert on_host(a, VEID) == NOTHING


def _receivers(node):
    """PIDs of the migration receivers serving ``node`` (its VE_ROOT)."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if b"migration" in argv and b"receive" in argv and \
                f"VE_ROOT={node.engine.layout.root}".encode() in env:
            found.append(int(pid))
    return found


def test_pages_a_target_does_not_take_ahead_go_with_the_state(fleet):
    """A receiver that does not know ``pages`` (an older node, say) refuses it: the
    move goes on, live, with the pages sent after the dump."""
    a, b, dc = fleet
    before = _running_counter(a, dc, "older-target.example")
    older = ("from ve.engine import migration\n"
             "request = migration._Channel.request\n"
             "def older_target(self, veid, asked, payload=None):\n"
             "    if asked == {'verb': 'pages'}:\n"
             "        asked = {'verb': 'pages-from-a-newer-node'}\n"
             "    return request(self, veid, asked, payload)\n"
             "migration._Channel.request = older_target\n")
    out = _migrate_patched(a, b, older)
    assert out.returncode == 0, out.stderr
    assert "could not go ahead" in out.stderr and "not a request of a migration" in out.stderr
    assert b.engine.status(VEID).state == "running" and on_host(a, VEID) == NOTHING
    after = b.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    assert _lasting(after) == _lasting(before)
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


def test_a_full_disk_at_the_target_leaves_the_ve_running_at_the_source(fleet):
    """The target's incoming space holds 1 MiB: the disk copy fails before anything
    stops, the VE runs on where it was, and the target keeps nothing of it."""
    a, b, dc = fleet
    a.engine.create(VEConfig(VEID, "full.example", "busybox", Limits(), ips=(VE_IP,)))
    init = a.net.engine("print(e.start(v['veid']))", veid=VEID)
    incoming = b.engine.layout.root / "incoming"
    incoming.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs",
                    str(incoming)], check=True)
    try:
        env = dict(os.environ, VE_ROOT=str(a.engine.layout.root),
                   VE_CGROUP_PARENT=a.engine.cgroups.parent, PYTHONPATH=str(ROOT_DIR))
        out = a.net.run(sys.executable, "-m", "ve.cli", "migrate", str(VEID), "--to",
                        f"{b.address}:{PORT}", env=env, check=False)
        assert out.returncode != 0 and "before the VE stopped" in out.stderr, out.stderr
        assert a.engine.status(VEID).init_pid == init
        assert not os.listdir(incoming) and on_host(b, VEID) == NOTHING
    finally:
        subprocess.run(["umount", str(incoming)], check=True)
    assert a.engine.migration_in_flight(VEID) is None
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


def _shared_ve(a, hostname):
    a.engine.create(VEConfig(VEID, hostname, "busybox", Limits(), ips=(VE_IP,),
                             shared_template=True))
    a.net.engine("print(e.start(v['veid']))", veid=VEID)
    a.engine.exec(VEID, ["sh", "-c", "echo mine >> /etc/passwd; echo data > /root/own; "
                                     "rm /etc/hostname"])
    return a.engine._layer_of(a.engine.config(VEID))


def _sees_its_own_tree(b):
    seen = b.engine.exec(VEID, ["sh", "-c", "cat /root/own; tail -1 /etc/passwd; "
                                            "ls /etc/hostname 2>&1 || true"]).stdout.decode()
    assert seen.startswith("data\nmine\n") and "No such file" in seen, seen


def test_a_shared_template_ve_moves_live_onto_the_targets_own_copy_of_the_layer(fleet):
    """The target has the same template tarball: it extracts the layer itself."""
    a, b, dc = fleet
    layer_id = _shared_ve(a, "shared-live.example")
    done = a.vectl("migrate", VEID, "--to", f"{b.address}:{PORT}")
    assert done["mode"] == "live", done
    assert b.engine.layout.layer(layer_id).is_dir()  # its own, from its template
    assert not (b.engine.layout.layer_dir / "received").exists()
    _sees_its_own_tree(b)
    assert on_host(a, VEID) == NOTHING
    assert wait_for(lambda: reaches(dc, VE_IP), 10)


def test_a_shared_template_ve_brings_its_layer_to_a_node_with_another_version(fleet):
    """The target's template of that name is another tarball: the layer comes with
    the VE and is kept apart, for the VEs that name it."""
    import gzip
    a, b, dc = fleet
    tarball = b.engine.layout.cache_dir / "busybox.tar.gz"
    tar = gzip.decompress(tarball.read_bytes())
    tarball.write_bytes(gzip.compress(tar, compresslevel=1, mtime=0))  # same files
    layer_id = _shared_ve(a, "shared-offline.example")
    a.net.engine("e.stop(v['veid'])\nprint('null')", veid=VEID)
    done = a.vectl("migrate", VEID, "--to", f"{b.address}:{PORT}")
    assert done["mode"] == "offline", done
    received = b.engine.layout.layer_dir / "received" / layer_id
    assert received.is_dir() and not b.engine.layout.layer(layer_id).exists()
    assert os.stat(received / "bin" / "busybox").st_uid == 0  # the template's owners
    b.net.engine("print(e.start(v['veid']))", veid=VEID)
    _sees_its_own_tree(b)
    # The node's own VEs of that template get its own layer, never the one received.
    b.engine.create(VEConfig(VEID + 1, "local.example", "busybox", Limits(),
                             shared_template=True))
    own = b.engine._layer_of(b.engine.config(VEID + 1))
    assert own != layer_id and b.engine.layout.layer(own).is_dir()
