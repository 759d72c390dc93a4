"""A VPS restored from a backup kept in one node's own repository, to run on another
node: made where the backup is, moved and started at its home, its logins set there.

Nodes A and B are tests/engine/test_migration.py's (their own VE_ROOTs and network
namespaces, each with its migration sshd); each node's part of the operation runs as
its worker runs it, in its network namespace (tests/hosting/test_moves_live.py).
"""

import pytest
from rest_framework.test import APIClient

from hosting.environments.models import Backup, VirtualEnvironment as VE
from hosting.ipam.models import IPAddress, IPPool
from hosting.nodes.models import Node
from hosting.operations import dispatch, executor
from hosting.operations.models import Operation
from tests.engine.conftest import wait_for
from tests.engine.test_migration import (NOTHING, PORT, VE_IP, VEID, fleet, on_host,  # noqa: F401
                                         reaches)
from tests.hosting.test_moves_live import in_netns
from tests.staffing import make_staff
from ve.config import Limits, VEConfig

MiB = 1 << 20
NEXT_IP = VE_IP.rsplit(".", 1)[0] + ".51"


@pytest.fixture
def backed_up(fleet, catalogue, settings, monkeypatch):  # noqa: F811
    """Node A keeps a backup of a VPS in its own repository and has no memory left for
    another; B serves the only address pool. Operations sent to a queue are recorded."""
    a, b, dc = fleet
    rows = {}
    for name, node, ram in (("node-a", a, 1 << 20), ("node-b", b, 8 << 30)):
        keys = node.vectl("migration", "key")
        rows[name] = Node.objects.create(
            name=name, state="online", ram_bytes=ram, cpus=4, disk_bytes=500 << 30,
            migrate_address=f"{node.address}:{PORT}", migrate_key=keys["key"],
            migrate_host_key=keys["host_key"], templates=["busybox"])
    pool = IPPool.objects.create(name="dc", network="198.18.9.0/24", first=VE_IP, last=NEXT_IP)
    pool6 = IPPool.objects.create(name="dc6", network="fd00:9::/64", first="fd00:9::50",
                                  last="fd00:9::5f")
    for served in (pool, pool6):
        served.nodes.add(rows["node-b"])
    ve = VE.objects.create(veid=VEID, hostname="kept.example.com", owner=catalogue["customer"],
                           plan=catalogue["plan"], node=rows["node-a"],
                           template=catalogue["template"], actual_state="running",
                           desired_state="running")
    a.engine.create(VEConfig(VEID, ve.hostname, "busybox",
                             Limits(diskspace=512 * MiB, diskinodes=8192), layout="image"))
    a.engine.start(VEID)
    assert a.engine.exec(VEID, ["sh", "-c", "echo 'customer data' > /root/data"]).returncode == 0
    settings.NODE_NAME = "node-a"
    op = Operation.objects.create(environment=ve, kind="backup", requested_by=catalogue["user"])
    executor.execute(op.pk, a.engine)
    assert Operation.objects.get(pk=op.pk).state == "succeeded"
    sent = []
    monkeypatch.setattr(dispatch, "send", lambda op_id, queue: sent.append((op_id, queue)))
    return a, b, dc, Backup.objects.get(environment=ve), sent


def _run(node, host, op, settings):
    """``op`` as the worker of ``node`` (its row; ``host``: the test node) runs it."""
    settings.NODE_NAME = node.name
    with in_netns(host.net.path):
        executor.execute(op.pk, host.engine)
    return Operation.objects.get(pk=op.pk)


def _root_hash(host, veid):
    line = host.engine.exec(veid, ["grep", "^root:", "/etc/shadow"]).stdout.decode()
    return line.split(":")[1]


@pytest.mark.django_db
def test_restored_where_the_backup_is_then_moved_to_the_node_with_room(
        backed_up, catalogue, settings, django_capture_on_commit_callbacks):
    a, b, dc, backup, sent = backed_up
    url = f"/api/v1/environments/{VEID}/backups/{backup.short_id}/restore-new/"
    customer = APIClient()
    customer.force_authenticate(catalogue["user"])
    # Customers do not pick nodes; staff cannot put it on the full node that keeps it.
    for node in ("node-b", "no-such-node"):  # the same answer: no node names learnt
        assert customer.post(url, {"plan": "S", "hostname": "back.example.com",
                                   "node": node}).status_code == 403
    staff = APIClient()
    staff.force_authenticate(make_staff("root-admin"))
    refused = staff.post(url, {"plan": "S", "hostname": "back.example.com", "node": "node-a"})
    assert refused.status_code == 409 and "node-a has no ram" in refused.json()["detail"]

    # Its template shares files: it is made on node A's layer and moves onto B's.
    catalogue["template"].share_files = True
    catalogue["template"].save()
    with django_capture_on_commit_callbacks(execute=False):
        answer = customer.post(url, {"plan": "S", "hostname": "back.example.com",
                                     "root_password": "new-root-pass-1"})
    assert answer.status_code == 202, answer.json()
    new = VE.objects.get(hostname="back.example.com")
    assert new.template == catalogue["template"] and new.shared_template
    op = new.operations.get()
    # Made on A (where its backup is), for B, with an address of B's pool.
    assert new.node.name == "node-a" and op.params["to"] == "node-b"
    assert {ip.pool.name for ip in IPAddress.objects.filter(environment=new)} == {"dc", "dc6"}
    assert IPAddress.objects.get(environment=new, pool__name="dc").address == VE_IP

    op = _run(Node.objects.get(name="node-a"), a, op, settings)
    new.refresh_from_db()
    assert op.state == "queued" and op.message == "going on at its new host", op.error
    assert new.node.name == "node-b" and sent == [(op.pk, new.node.queue)]
    assert on_host(a, new.veid) == NOTHING
    assert b.engine.status(new.veid).state == "running"
    # A's worker killed after the move, before it said so: run again (as reconcile does),
    # it finds the VPS at B and does not make it twice.
    Operation.objects.filter(pk=op.pk).update(state="running", attempts=1)
    VE.objects.filter(pk=new.pk).update(node=Node.objects.get(name="node-a"))
    op = _run(Node.objects.get(name="node-a"), a, op, settings)
    assert op.state == "queued" and op.attempts == 0 and len(sent) == 2, op.error
    assert on_host(a, new.veid) == NOTHING and VE.objects.get(pk=new.pk).node.name == "node-b"

    op = _run(new.node, b, op, settings)
    assert op.state == "succeeded" and op.progress == 100, op.error
    assert "password_hash" not in op.params  # wiped once done, at its home
    new.refresh_from_db()
    assert new.actual_state == "running" and new.node.name == "node-b"
    assert b.engine.exec(new.veid, ["cat", "/root/data"]).stdout == b"customer data\n"
    assert _root_hash(b, new.veid) != _root_hash(a, VEID)  # the new password's
    assert wait_for(lambda: reaches(dc, VE_IP), 10)  # B announces its address
