"""Address allocation under contention, node liveness and lost operations."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from hosting.core.errors import Conflict
from hosting.environments import services
from hosting.ipam import services as ipam
from hosting.ipam.models import IPAddress
from hosting.nodes import tasks as node_tasks, worker
from hosting.nodes.models import Node
from hosting.operations import dispatch, tasks as op_tasks
from hosting.operations.models import Operation

pytestmark = pytest.mark.django_db


def order(catalogue, hostname):
    return services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                          hostname, catalogue["user"], root_password="root-pass-123")


def test_an_address_taken_between_look_and_insert_is_skipped(catalogue, monkeypatch):
    op = order(catalogue, "one.example.com")
    held = op.environment.addresses.get(address__startswith="198.18.5.").address
    # The other order saw the same address free: the unique column makes it retry.
    real_first_free = ipam._first_free
    calls = []

    def racy_first_free(pool):
        calls.append(pool)
        return held if len(calls) == 1 else real_first_free(pool)

    monkeypatch.setattr(ipam, "_first_free", racy_first_free)
    second = order(catalogue, "two.example.com")
    addresses = set(second.environment.addresses.values_list("address", flat=True))
    assert held not in addresses and "198.18.5.3" in addresses
    assert IPAddress.objects.filter(address=held).count() == 1


def test_a_veid_taken_between_look_and_insert_is_skipped(catalogue, monkeypatch):
    from hosting.environments import services
    first = order(catalogue, "one.example.com").environment.veid
    real_next_veid, asked = services._next_veid, []

    def racy_next_veid(ahead=0):
        asked.append(ahead)  # the other order read the same highest VEID first
        return first if len(asked) == 1 else real_next_veid(ahead)

    monkeypatch.setattr(services, "_next_veid", racy_next_veid)
    second = order(catalogue, "two.example.com").environment.veid
    assert len(asked) == 2 and asked[0] == 0 and 0 <= asked[1] < 8
    assert first < second <= first + 8


def test_a_full_pool_refuses_the_order_and_keeps_nothing(catalogue):
    for i in range(5):  # the /29 pool has .2-.6
        order(catalogue, f"fill{i}.example.com")
    before = (IPAddress.objects.count(), Operation.objects.count())
    with pytest.raises(Conflict, match="no free IPv4 address left on node hn1"):
        order(catalogue, "sixth.example.com")
    assert (IPAddress.objects.count(), Operation.objects.count()) == before
    assert not catalogue["customer"].environments.filter(hostname="sixth.example.com").exists()


def test_released_addresses_go_back_to_the_pool(catalogue):
    op = order(catalogue, "one.example.com")
    free = ipam.free_count(catalogue["v4"])
    assert ipam.release(op.environment) == ["198.18.5.2", "fd00:5::10"]
    assert ipam.free_count(catalogue["v4"]) == free + 1


def test_heartbeat_registers_the_node_with_its_facts(db, settings):
    node = worker.heartbeat("fresh-node")
    assert node.state == "online" and node.cpus >= 1 and node.ram_bytes > 1 << 30
    assert node.cgroup_version in (1, 2)
    assert isinstance(node.warnings, list)
    Node.objects.filter(pk=node.pk).update(state="draining")
    assert worker.heartbeat("fresh-node").state == "draining"  # staff's choice stays


def test_nodes_without_heartbeat_go_offline(catalogue, settings):
    node = catalogue["node"]
    Node.objects.filter(pk=node.pk).update(
        last_heartbeat=timezone.now() - timedelta(seconds=settings.NODE_OFFLINE_AFTER_SECONDS + 1))
    fresh = Node.objects.create(name="hn2", state="online", last_heartbeat=timezone.now())
    assert node_tasks.mark_stale_nodes() == 1
    assert Node.objects.get(pk=node.pk).state == "offline"
    assert Node.objects.get(pk=fresh.pk).state == "online"


def test_lost_operations_are_sent_again(catalogue, monkeypatch, settings):
    sent = []
    monkeypatch.setattr(dispatch, "send", lambda op_id, queue: sent.append((op_id, queue)) or True)
    op = order(catalogue, "lost.example.com")
    assert op_tasks.requeue_lost() == 0  # too young: its message may still be on the way
    Operation.objects.filter(pk=op.pk).update(
        created=timezone.now() - timedelta(seconds=settings.OPERATION_REQUEUE_SECONDS + 1))
    assert op_tasks.requeue_lost() == 1
    assert sent == [(op.pk, "node.hn1")]


def test_a_broker_that_is_down_does_not_fail_the_request():
    # A fresh process: the broker URL is read once, when the Celery app starts.
    probe = ("import django; django.setup()\n"
             "from hosting.operations import dispatch\n"
             "print(dispatch.send('00000000-0000-0000-0000-000000000000', 'node.hn1'))")
    env = dict(os.environ, HOSTING_REDIS_URL="redis://127.0.0.1:1/0",
               DJANGO_SETTINGS_MODULE="hosting.settings")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False", out.stderr
    assert "not sent to node.hn1 (will be requeued)" in out.stderr
