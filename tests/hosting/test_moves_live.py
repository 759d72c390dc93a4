"""The "migrate" operation on two real nodes: the executor and the engine in-process.

Nodes A and B are tests/engine/test_migration.py's: their own VE_ROOTs, cgroup
parents and network namespaces on one data-centre bridge, each with its
migration sshd. The operation runs as node A's worker runs it, in A's network
namespace (this thread joins it for the call). The database names the nodes'
identities as their chores workers report them (hosting/nodes/peers.py).
"""

import contextlib
import os

import pytest

from hosting.environments.models import VirtualEnvironment as VE
from hosting.ipam.models import IPAddress, IPPool
from hosting.nodes import moves
from hosting.nodes.models import Node
from hosting.operations import executor
from hosting.operations.models import Operation
from tests.engine.test_checkpoint import COUNTER
from tests.engine.test_migration import (NOTHING, PORT, VE_IP, VEID, _lasting, _mover_dies_at,
                                         fleet, on_host, reaches)  # noqa: F401
from tests.engine.conftest import wait_for
from tests.staffing import make_staff
from ve.config import Limits, VEConfig
from ve.kernel import libc


@contextlib.contextmanager
def in_netns(path):
    """This thread in the network namespace at ``path`` (a node worker's), then back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(path, os.O_RDONLY)
    try:
        libc.setns(there, libc.CLONE_NEWNET)
        yield
    finally:
        libc.setns(home, libc.CLONE_NEWNET)
        os.close(there)
        os.close(home)


@pytest.fixture
def nodes(fleet, catalogue, settings):  # noqa: F811
    """The dashboard's view of nodes A and B, with a running VPS on A."""
    a, b, dc = fleet
    rows = {}
    for name, node in (("node-a", a), ("node-b", b)):
        keys = node.vectl("migration", "key")
        rows[name] = Node.objects.create(
            name=name, state="online", ram_bytes=8 << 30, cpus=4, disk_bytes=500 << 30,
            migrate_address=f"{node.address}:{PORT}", migrate_key=keys["key"],
            migrate_host_key=keys["host_key"], templates=["busybox"])
    pool = IPPool.objects.create(name="dc", network="198.18.9.0/24", first=VE_IP, last=VE_IP)
    pool.nodes.add(*rows.values())
    ve = VE.objects.create(veid=VEID, hostname="moved.example.com", owner=catalogue["customer"],
                           plan=catalogue["plan"], node=rows["node-a"],
                           template=catalogue["template"], actual_state="running",
                           desired_state="running")
    IPAddress.objects.create(pool=pool, address=VE_IP, environment=ve)
    a.engine.create(VEConfig(VEID, ve.hostname, "busybox", Limits(), ips=(VE_IP,)))
    a.net.engine("print(e.start(v['veid']))", veid=VEID)
    a.engine.exec(VEID, ["sh", "-c", COUNTER])
    assert wait_for(lambda: reaches(dc, VE_IP), 10)
    settings.NODE_NAME = "node-a"
    return a, b, dc, ve


def _run_on_a(a, op):
    with in_netns(a.net.path):
        executor.execute(op.pk, a.engine)
    return Operation.objects.get(pk=op.pk)


@pytest.mark.django_db
def test_staff_move_a_running_vps_live_and_its_owner_sees_the_downtime(
        nodes, django_capture_on_commit_callbacks):
    a, b, dc, ve = nodes
    before = a.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    with django_capture_on_commit_callbacks(execute=False):
        op = moves.request(ve, make_staff("root-admin"))  # the best node: B
    op = _run_on_a(a, op)
    assert op.state == "succeeded", op.error
    result = op.params["result"]
    assert result["mode"] == "live" and 0 < result["downtime_s"] < result["total_s"], result
    assert "moved to another host, with its processes and connections" in op.message
    assert f"{result['downtime_s']:.1f} s without service" in op.message
    ve.refresh_from_db()
    assert ve.node.name == "node-b" and ve.actual_state == "running"
    assert on_host(a, VEID) == NOTHING and b.engine.status(VEID).state == "running"
    after = b.engine.exec(VEID, ["ps", "-o", "pid,ppid,comm"]).stdout.decode()
    assert _lasting(after) == _lasting(before)
    assert wait_for(lambda: reaches(dc, VE_IP), 10)
    # A trusts exactly B now, as the database says (the runner synced it).
    trusted = (a.engine.layout.root / "migrate" / "authorized_keys").read_text()
    assert trusted.count("\n") == 1 and Node.objects.get(name="node-b").migrate_key in trusted


@pytest.mark.django_db
def test_a_move_whose_worker_died_after_the_target_took_over_is_finished_on_resume(
        nodes, django_capture_on_commit_callbacks):
    """Node A's worker was killed after B restored the VPS: run again (as reconcile does
    with an interrupted operation), the operation finds the move done there."""
    a, b, dc, ve = nodes
    with django_capture_on_commit_callbacks(execute=False):
        op = moves.request(ve, make_staff("root-admin"), "node-b")
    Operation.objects.filter(pk=op.pk).update(state="running", attempts=1)
    _mover_dies_at(a, "_destroy", f"{b.address}:{PORT}")
    op = _run_on_a(a, op)
    assert op.state == "succeeded", op.error
    assert op.message == "done; moved to another host"
    ve.refresh_from_db()
    assert ve.node.name == "node-b" and on_host(a, VEID) == NOTHING
    assert b.engine.status(VEID).state == "running"


@pytest.mark.django_db
def test_a_move_that_cannot_happen_leaves_the_vps_running_where_it_was(
        nodes, django_capture_on_commit_callbacks):
    """B stopped trusting A (its key was dropped there): the move fails before anything
    stops, the VPS runs on at A, and the customer reads a plain sentence."""
    a, b, dc, ve = nodes
    init = a.engine.status(VEID).init_pid
    with django_capture_on_commit_callbacks(execute=False):
        op = moves.request(ve, make_staff("root-admin"), "node-b")
    from ve.migrate import identity
    identity.trust_only(b.engine.layout, [], "true")
    op = _run_on_a(a, op)
    assert op.state == "failed" and op.error_code == "migration_failed", op.error
    ve.refresh_from_db()
    assert ve.node.name == "node-a" and ve.actual_state == "running"
    assert a.engine.status(VEID).init_pid == init and on_host(b, VEID) == NOTHING
    assert a.engine.migration_in_flight(VEID) is None
