"""Placement of new VEs within each node's overcommit limits and its risk level."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User

from hosting.customers.models import Customer
from hosting.environments.models import OSTemplate, VirtualEnvironment
from hosting.nodes.models import Node
from django.utils import timezone

from hosting.nodes.placement import Fleet, NoCapacity, choose_node, shortfall
from hosting.plans.models import Plan
from hosting.usage import capacity
from hosting.usage.models import UsageRollup

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
    # Unmeasured, each counts at risk/ratio of its RAM: six fill the node to its 80%.
    assert shortfall(hn, small) == ["ram"]  # (its use is at the risk level too)


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


def measured(ve, ram, cpu=0.0, hours=24):
    """Give ``ve`` ``hours`` of hourly rollups using ``ram`` bytes and ``cpu`` CPUs."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    # Made before its first rollup, as a VE with history is (period.py relies on it).
    VirtualEnvironment.objects.filter(pk=ve.pk).update(created=now - timedelta(hours=hours + 1))
    UsageRollup.objects.bulk_create(
        UsageRollup(environment=ve, resolution=3600, samples=120, ram_avg=ram, cpu_avg=cpu,
                    time=now - timedelta(hours=hour + 1)) for hour in range(hours))


def test_measured_use_lets_a_node_sell_past_what_full_limits_would_allow():
    hn = node("hn1", ram_gib=4, ram_overcommit=Decimal("3"),  # 12 GiB may be sold
              cpu_overcommit=Decimal("10"), disk_gib=1000)
    small = plan()
    for veid in range(100, 104):
        measured(place(hn, small, veid), ram=GIB // 8)  # each uses 1/8 of its 1 GiB
    capacity.refresh()
    # Use: 4 x 128 MiB measured, each new one expected at 128 MiB: (3.2 GiB - 0.5) / 0.125.
    assert Fleet([hn]).rooms[0].fits(small) == 8  # sales stop it first: 12 - 4 GiB
    for veid in range(104, 112):
        assert shortfall(hn, small) == []
        place(hn, small, veid)  # new, unmeasured: each counts at the plan's observed 1/8
    assert shortfall(hn, small) == ["ram"]


def test_a_node_past_its_risk_level_takes_nothing_even_with_sales_left():
    hn = node("hn1", ram_gib=4, ram_overcommit=Decimal("4"))
    measured(place(hn, plan("L", ram_mb=4096), 100), ram=int(3.3 * GIB))  # past 80% of 4 GiB
    tiny = plan("XS", ram_mb=128)  # never measured: 0.8/4 of its RAM, 25.6 MiB
    capacity.refresh()
    assert shortfall(hn, tiny) == ["ram headroom"]
    with pytest.raises(NoCapacity, match=r"hn1: no ram headroom left"):
        choose_node(tiny)
    hn.risk_pct = 90  # staff accept more risk on this node: 3.6 GiB
    hn.save()
    assert shortfall(hn, tiny) == []


def test_the_node_with_most_use_left_wins_over_the_one_with_most_sales_left():
    busy = node("busy", ram_gib=8)  # more left to sell, but its VEs really use their RAM
    quiet = node("quiet", ram_gib=6)
    s = plan()
    measured(place(busy, plan("L", ram_mb=4096), 100), ram=4 * GIB)
    for veid in (101, 102, 103):
        measured(place(quiet, s, veid), ram=GIB // 16)
    capacity.refresh()
    # Sales left: busy 12 - 4 GiB, quiet 9 - 3; use left: busy 6.4 - 4, quiet 4.8 - 3/16.
    assert choose_node(s).name == "quiet"
    assert capacity.stored().nodes[busy.pk].ram_p95 == 4 * GIB


def test_a_vps_with_less_than_half_a_day_of_history_counts_at_its_plans_share():
    hn = node("hn1", ram_gib=4, ram_overcommit=Decimal("2"))
    s = plan()
    measured(place(hn, s, 100), ram=GIB // 2)
    young = place(hn, s, 101)
    measured(young, ram=GIB, hours=capacity.MIN_HOURS - 1)  # a big but brief history
    profile = capacity.refresh()
    assert profile.nodes[hn.pk].measured == {Plan.objects.get().environments.get(veid=100).pk}
    room = Fleet([hn], profile).rooms[0]
    assert room.use.ram == GIB // 2 + GIB // 2  # the young one at the plan's share, 1/2


def test_a_young_vps_weighs_on_its_node_at_its_own_p95_before_its_first_figures():
    hn = node("hn1", ram_gib=16)
    s = plan()
    measured(place(hn, s, 100), ram=GIB, hours=720)  # a month at 1 GiB
    measured(place(hn, s, 101), ram=2 * GIB, hours=20)  # a day old, at 2 GiB
    # Without standing in for its first 700 hours, the 20 hours it adds would sit
    # in the top 5% and the p95 of the sums would be 1 GiB.
    assert capacity.refresh().nodes[hn.pk].ram_p95 == 3 * GIB


def test_fits_agrees_with_placing_one_by_one_to_the_last_vps():
    hn = node("hn1", ram_gib=64, cpus=4, disk_gib=10000)  # 16 CPUs may be sold
    tenth = Plan.objects.create(name="tenth", ram_mb=64, cpus=0, cpu_limit_pct=10,
                                disk_gib=1, monthly_price=Decimal("1"))
    for veid in (100, 101, 102):
        place(hn, tenth, veid)
    fleet = Fleet([hn])
    counted = fleet.rooms[0].fits(tenth)
    assert counted == 157  # (16 - 0.3) / 0.1, exactly: no float rounding down
    for _ in range(counted):
        fleet.place_plan(tenth)
    with pytest.raises(NoCapacity, match="no cpu left"):
        fleet.place_plan(tenth)
