"""Two nodes on one machine, for real (``make run NODES=2``): each a node of its own.

The whole product with two nodes joined by a data-centre segment: each node
comes online on its own queues, has its own watcher and migration sshd (on its
data-centre address, in its namespace), and a VE ordered through the API lands
in the VE_ROOT, cgroup parent and namespace of the node it was placed on. The
segment carries traffic between the nodes' namespaces and to the VEs of either.
A stop leaves what must outlive it (VEs, their files, the namespaces a new
``make run`` takes over) and no process; the clean-up leaves nothing at all.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest

from hosting import datacentre
from hosting.stack import wait_until
from hosting.stacknode import MIGRATE_PORT
from ve import watch
from ve.kernel.proc import parent as parent_of
from tests.hosting.test_dispatch_live import order
from tests.conftest import started_live_stack
from tests.livestack import GATEWAYS


@pytest.fixture(scope="module")
def fleet():
    live = started_live_stack(nodes=2, dc=True)
    yield live
    live.stop()


def in_netns(netns, *argv):
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", *argv],
                          capture_output=True, text=True, timeout=60)


def pings(netns, address):
    return in_netns(netns, "busybox", "ping", "-c", "1", "-W", "2", address).returncode == 0


def environ(pid):
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def place_on(live, staff, customer, node, hostname):
    """Order a VPS while every other node drains, so placement can only pick ``node``."""
    by_name = {n["name"]: n for n in staff.get("/api/v1/nodes/")["results"]}
    for other in live.stack.nodes:
        state = "online" if other is node else "draining"
        staff.patch(f"/api/v1/nodes/{by_name[other.name]['id']}/", {"state": state})
    op = customer.wait_operation(order(customer, hostname))
    assert op["state"] == "succeeded", (op, live.logs(node.process("node-worker")))
    return customer.get(f"/api/v1/environments/{op['veid']}/")


def test_two_nodes_each_with_its_own_queues_root_cgroups_namespace_and_sshd(fleet):
    live, staff, customer = fleet, fleet.api("admin"), fleet.api("demo")
    one, two = live.stack.nodes
    assert (one.name, two.name) == ("testnode", "testnode-2")
    assert one.effective("VE_ROOT") == str(live.ve_root)
    assert Path(two.effective("VE_ROOT")) == live.data_dir / "nodes" / "testnode-2" / "ve"
    assert two.effective("VE_CGROUP_PARENT") == f"{live.cgroup_top}/ve-2"

    online = {n["name"]: n for n in staff.get("/api/v1/nodes/?state=online")["results"]}
    for node in (one, two):
        assert online[node.name]["queue"] == node.queue
        worker = live.stack.processes[node.process("node-worker")]
        env = environ(worker.pid)  # nsenter execs the worker: its PID is the worker's
        assert env["HOSTING_NODE_NAME"] == node.name
        assert env["HOSTING_REDIS_USER"] == f"node-{node.name}"
        assert env["HOSTING_MIGRATE_ADDRESS"] == f"{node.dc_address}:{MIGRATE_PORT}"
        assert env["VE_NET_UPLINK"] == datacentre.UPLINK
        assert env["VE_ROOT"] == node.effective("VE_ROOT")
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes().split(b"\0")
        assert node.queue.encode() in cmdline
        chores = Path(f"/proc/{live.stack.processes[node.process('node-chores')].pid}"
                      "/cmdline").read_bytes().split(b"\0")
        assert node.chores_queue.encode() in chores
        assert os.readlink(f"/proc/{worker.pid}/ns/net") == \
            os.readlink(f"/proc/{live.stack.processes[node.process('node-watcher')].pid}"
                        "/ns/net")
    # Each node has its own watcher (one per VE_ROOT) and migration sshd, in its namespace.
    watchers = {live.stack.node_watcher_pid(node) for node in (one, two)}
    assert None not in watchers and len(watchers) == 2
    for node in (one, two):
        listening = in_netns(node.netns, "ss", "-ltnH").stdout
        assert f"{node.dc_address}:{MIGRATE_PORT} " in listening, \
            live.logs(node.process("node-sshd"))
    # The segment joins the namespaces (and only through dc0).
    assert pings(one.netns, two.dc_address) and pings(two.netns, one.dc_address)
    assert pings(live.stack.dc_netns, one.dc_address)
    assert "default" not in in_netns(one.netns, "ip", "route").stdout

    # A VPS placed on each node lives in that node's VE_ROOT, cgroups and namespace.
    ves = {node.name: place_on(live, staff, customer, node, f"fleet-{node.index}.example.com")
           for node in (two, one)}
    for node, other in ((one, two), (two, one)):
        ve = ves[node.name]
        assert ve["node"] == node.name
        veid = ve["veid"]
        assert live.engine(node).layout.conf(veid).exists()
        assert not live.engine(other).layout.conf(veid).exists()
        assert live.engine(node).cgroups.exists(str(veid))
        assert not live.engine(other).cgroups.exists(str(veid))
        assert f"veth{veid}" in in_netns(node.netns, "ip", "-o", "link").stdout
        assert f"veth{veid}" not in in_netns(other.netns, "ip", "-o", "link").stdout
        # Its node announces its address on the segment: the data centre and the other
        # node reach it there, by the address alone.
        v4 = next(a for a in ve["addresses"] if ":" not in a)
        assert pings(live.stack.dc_netns, v4), v4
        assert pings(other.netns, v4), v4
    for node in (one, two):  # leave both nodes open to placement for other tests
        by_name = {n["name"]: n for n in staff.get("/api/v1/nodes/")["results"]}
        staff.patch(f"/api/v1/nodes/{by_name[node.name]['id']}/", {"state": "online"})


def _identities_reported(staff, nodes, live=None):
    """Every node reported its migration address and the busybox template (and, given
    ``live``, trusts the other nodes' keys: a move between them can begin)."""
    rows = {n["name"]: n for n in staff.get("/api/v1/nodes/")["results"]}
    reported = all(rows[node.name]["migrate_address"] == f"{node.dc_address}:{MIGRATE_PORT}"
                   and "busybox" in rows[node.name]["templates"] for node in nodes)
    return reported and (live is None or all(
        _trusts(live, node, other) for node in nodes for other in nodes if other is not node))


def _trusts(live, node, other):
    """``node`` lets ``other`` push VEs to it (its authorized_keys holds other's key)."""
    here, there = (live.engine(n).layout.root / "migrate" for n in (node, other))
    try:
        key = (there / "id_ed25519.pub").read_text().split()[1]
        return key in (here / "authorized_keys").read_text()
    except (OSError, IndexError):
        return False


def _where(live, veid):
    """{node name: "running"/"stopped"} of the nodes that hold VE ``veid``."""
    found = {}
    for node in live.stack.nodes:
        engine = live.engine(node)
        if engine.layout.conf(veid).exists():
            found[node.name] = engine.status(veid).state
    return found


def test_staff_migrate_a_vps_live_and_a_killed_worker_is_finished_by_reconcile(fleet):
    """Through the API, the nodes' workers and their migration sshds: the nodes trust
    each other as the dashboard says, the VPS moves live with its address, its owner
    sees the move and no crash; then the source's worker is killed -9 in the middle of
    the move back, and once it is restarted the move ends with the VPS on one node."""
    live, staff, customer = fleet, fleet.api("admin"), fleet.api("demo")
    one, two = live.stack.nodes
    wait_until(lambda: _identities_reported(staff, (one, two), live), 60,
               "the nodes did not report their migration identities")
    ve = place_on(live, staff, customer, one, "mover.example.com")
    for node in (one, two):
        by_name = {n["name"]: n for n in staff.get("/api/v1/nodes/")["results"]}
        staff.patch(f"/api/v1/nodes/{by_name[node.name]['id']}/", {"state": "online"})
    veid, v4 = ve["veid"], next(a for a in ve["addresses"] if ":" not in a)
    pid_before = live.engine(one).status(veid).init_pid
    assert pid_before and pings(live.stack.dc_netns, v4)

    op = staff.wait_operation(staff.post(f"/api/v1/environments/{veid}/migrate/",
                                         {"node": two.name}), timeout=120)
    assert op["state"] == "succeeded", (op, live.logs(one.process("node-worker")))
    assert "with its processes and connections" in op["message"], op
    assert customer.get(f"/api/v1/environments/{veid}/")["node"] == two.name
    assert _where(live, veid) == {two.name: "running"}
    assert pings(live.stack.dc_netns, v4) and pings(one.netns, v4)
    # Node two's watcher restored it, as its init's parent: a reboot from inside is seen.
    restored = live.engine(two).status(veid).init_pid
    assert parent_of(restored) == \
        watch.request(live.engine(two).layout, {"op": "ping"})["pid"]
    seen = customer.get(f"/api/v1/operations/?environment__veid={veid}")["results"]
    kinds = [row["kind"] for row in seen]
    assert "migrate" in kinds and "crash" not in kinds, seen  # the freeze is no crash

    # Back to node one, with node two's worker killed -9 while it moves the VPS.
    moving = staff.post(f"/api/v1/environments/{veid}/migrate/", {"node": one.name})
    worker = two.process("node-worker")
    wait_until(lambda: staff.get(f"/api/v1/operations/{moving['id']}/")["progress"] >= 10,
               60, "the move back did not begin")
    live.stack.kill(worker)
    assert len(_where(live, veid)) >= 1  # (the target may hold it already, or not yet)
    live.stack.restart(worker)
    op = staff.wait_operation(moving, timeout=180)
    assert op["state"] == "succeeded", (op, live.logs(worker))
    assert op["attempts"] >= 2, op  # it was interrupted and run again
    assert customer.get(f"/api/v1/environments/{veid}/")["node"] == one.name
    assert _where(live, veid) == {one.name: "running"}
    assert not live.engine(two).migration_in_flight(veid)
    assert pings(live.stack.dc_netns, v4)


def test_a_stop_keeps_vpses_and_namespaces_leaks_nothing_and_a_rerun_takes_over(fleet):
    live = fleet
    one, two = live.stack.nodes
    pids = {name: proc.pid for name, proc in live.stack.processes.items()}
    assert {one.process("node-sshd"), two.process("node-sshd"),
            two.process("node-worker"), two.process("node-chores")} <= set(pids)
    running = {node.name: [veid for veid in live.engine(node).layout.veids()]
               for node in (one, two)}
    assert all(running.values()), running

    live.stack.stop()
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", name
    # The VPSes run on (their watchers' twins serve them) and keep their files.
    for node in (one, two):
        engine = live.engine(node)
        for veid in running[node.name]:
            assert engine.status(veid).state == "running", (node.name, veid)
    names = datacentre.namespaces()
    assert {one.netns, two.netns, live.stack.dc_netns} <= names
    # A second `make run` takes the namespaces over as they are ...
    live.stack.prepare_node_netns(GATEWAYS)
    addresses = in_netns(one.netns, "ip", "-o", "addr", "show", "dev", "dc0").stdout
    assert addresses.count(f"{one.dc_address}/") == 1
    assert pings(one.netns, two.dc_address)
    # ... and makes again what is gone (here the segment, and with it both uplinks).
    datacentre.remove(live.stack.dc_netns)
    wait_until(lambda: datacentre.UPLINK not in in_netns(two.netns, "ip", "-o", "link").stdout,
               10, "the uplinks outlived the segment")  # the kernel frees a namespace later
    live.stack.prepare_node_netns(GATEWAYS)
    assert pings(one.netns, two.dc_address) and pings(two.netns, one.dc_address)
    assert pings(live.stack.dc_netns, two.dc_address)

    # The fixture's clean-up stops the twins and removes VEs, cgroups and namespaces.
    marker = f"HOSTING_DATA_DIR={live.data_dir}".encode()
    live.stop()
    live.stop = lambda: None  # done: the fixture's own call has nothing left to do

    def leftovers():
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and \
                        marker in (proc / "environ").read_bytes().split(b"\0"):
                    found.append((proc.name, (proc / "cmdline").read_bytes()))
            except OSError:
                continue
        return found
    # A watcher told to stop has closed its socket but may take a moment to exit
    # (its VEs' notifiers closed, its LXCFS unmounted) on a busy machine.
    deadline = time.monotonic() + 20
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers() == []
    assert not {one.netns, two.netns, live.stack.dc_netns} & datacentre.namespaces()
    assert not live.data_dir.exists()
