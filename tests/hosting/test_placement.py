"""Placement of new VEs within each node's overcommit limits."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User

from hosting.customers.models import Customer
from hosting.environments.models import OSTemplate, VirtualEnvironment
from hosting.nodes.models import Node
from hosting.nodes.placement import NoCapacity, choose_node, shortfall
from hosting.plans.models import Plan

pytestmark = pytest.mark.django_db
GIB = 1 << 30


def node(name, ram_gib=4, cpus=2, disk_gib=100, state="online", **ratios):
    return Node.objects.create(name=name, ram_bytes=ram_gib * GIB, cpus=cpus,
                               disk_bytes=disk_gib * GIB, state=state, **ratios)


def plan(name="S", ram_mb=1024, disk_gib=10, cpus=1):
    return Plan.objects.create(name=name, ram_mb=ram_mb, disk_gib=disk_gib, cpus=cpus,
                               monthly_price=Decimal("5"))


def place(on, with_plan, veid, state="running"):
    owner, _ = Customer.objects.get_or_create(user=User.objects.get_or_create(username="c")[0])
    template, _ = OSTemplate.objects.get_or_create(name="busybox", title="BusyBox")
    return VirtualEnvironment.objects.create(veid=veid, owner=owner, plan=with_plan, node=on,
                                             template=template, hostname=f"ve{veid}",
                                             actual_state=state)


def test_ram_may_be_sold_up_to_the_overcommit_ratio():
    hn = node("hn1", ram_gib=4, ram_overcommit=Decimal("1.5"))  # 6 GiB may be sold
    small = plan()
    for veid in range(100, 106):
        assert shortfall(hn, small) == []
        place(hn, small, veid)
    assert shortfall(hn, small) == ["ram"]


def test_destroyed_ves_free_their_share():
    hn = node("hn1", ram_gib=1, ram_overcommit=Decimal("1"))
    place(hn, plan(), 100, state="destroyed")
    assert shortfall(hn, Plan.objects.get()) == []


def test_the_node_with_most_ram_left_wins_and_offline_nodes_are_skipped():
    node("small", ram_gib=2)
    node("big", ram_gib=8)
    node("bigger-but-offline", ram_gib=64, state="offline")
    assert choose_node(plan()).name == "big"


def test_no_capacity_names_what_ran_out():
    node("hn1", ram_gib=1, disk_gib=5, ram_overcommit=Decimal("1"))
    with pytest.raises(NoCapacity, match=r"hn1: no ram, disk left"):
        choose_node(plan(ram_mb=2048, disk_gib=10))


def test_no_node_online():
    node("hn1", state="draining")
    with pytest.raises(NoCapacity, match="no node is online"):
        choose_node(plan())


def test_cpu_limit_counts_as_a_fraction_of_a_cpu():
    hn = node("hn1", ram_gib=64, cpus=1, cpu_overcommit=Decimal("1"))
    half = Plan.objects.create(name="half", ram_mb=64, cpus=0, cpu_limit_pct=50,
                               monthly_price=Decimal("1"))
    place(hn, half, 100)
    assert shortfall(hn, half) == []
    place(hn, half, 101)
    assert shortfall(hn, half) == ["cpu"]
