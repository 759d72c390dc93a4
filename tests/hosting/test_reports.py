"""The overcommit report against a hand-built fleet: 3 nodes, 5 plans, 200 VEs, a day
of hourly usage in which VE i idles at a quarter of its plan's RAM and peaks
at three quarters in hour i % 24. The expected figures are worked out below
with plain loops, apart from the code under test."""

import csv
import io
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes.models import Node
from hosting.plans.models import Plan
from hosting.usage import reports
from hosting.usage.models import UsageRollup
from tests.staffing import make_staff, verified_login

pytestmark = pytest.mark.django_db

GiB, MiB = 1 << 30, 1 << 20
NOW = datetime(2026, 11, 3, 0, 0, tzinfo=timezone.utc)
NODES = (("n1", 64, 32), ("n2", 128, 64), ("n3", 32, 16))  # name, RAM GiB, CPUs
RAM_RATIO, CPU_RATIO = 3, 20  # generous sales, so usage is what limits most fits
PLAN_RAM = (256, 512, 1024, 2048, 4096)  # MiB


@pytest.fixture
def fleet(catalogue):
    nodes = [Node.objects.create(name=name, state="online", ram_bytes=ram * GiB, cpus=cpus,
                                 disk_bytes=10000 * GiB, ram_overcommit=RAM_RATIO,
                                 cpu_overcommit=CPU_RATIO) for name, ram, cpus in NODES]
    plans = [Plan.objects.create(name=f"P{mb}", ram_mb=mb, cpus=1, cpu_limit_pct=100,
                                 disk_gib=10, inodes=100000, monthly_price=Decimal("1"))
             for mb in PLAN_RAM]
    rollups, ves = [], []
    for i in range(200):
        plan, node = plans[i % 5], nodes[i % 3]
        ve = VE.objects.create(veid=1000 + i, owner=catalogue["customer"], plan=plan,
                               node=node, template=catalogue["template"],
                               hostname=f"f{i}.example.com", actual_state="running")
        ves.append(ve)
        for hour in range(24):
            peak = hour == i % 24
            rollups.append(UsageRollup(
                environment=ve, resolution=3600, samples=120,
                time=NOW - timedelta(hours=24 - hour),
                ram_avg=plan.ram_mb * MiB * (0.75 if peak else 0.25),
                cpu_avg=0.5 if peak else 0.1, disk_max=2 * GiB))
    UsageRollup.objects.bulk_create(rollups)
    return nodes, plans, ves


def expected_node(name, ves):
    """The node's figures by hand: hourly totals, their p95 (the 23rd of 24 sorted
    values, nearest rank) and peak, and the sum of each VE's own p95."""
    mine = [(i, ve) for i, ve in enumerate(ves) if ve.node.name == name]
    totals = []
    for hour in range(24):
        totals.append(sum(ve.plan.ram_mb * MiB * (0.75 if hour == i % 24 else 0.25)
                          for i, ve in mine))
    p95 = sorted(totals)[22]
    own = sum(ve.plan.ram_mb * MiB * 0.25 for _, ve in mine)  # each VE's p95: its idle
    return {"count": len(mine), "p95": p95, "peak": max(totals), "own": own,
            "sold": sum(ve.plan.ram_mb * MiB for _, ve in mine)}


def test_node_figures_match_the_hand_computed_fleet(fleet):
    nodes, plans, ves = fleet
    rows = {row["node"]: row for row in reports.node_report(days=1, now=NOW)}
    fits = set()
    for name, ram_gib, cpus in NODES:
        want, row = expected_node(name, ves), rows[name]
        assert row["ves"] == want["count"] and row["ves_per_core"] == want["count"] / cpus
        assert row["ram_sold"] == want["sold"]
        assert row["ram_overcommit"] == pytest.approx(want["sold"] / (ram_gib * GiB))
        assert row["ram_p95"] == pytest.approx(want["p95"])
        assert row["ram_peak"] == pytest.approx(want["peak"])
        assert row["ram_coincidence"] == pytest.approx(want["own"] / want["p95"])
        assert row["cpu_sold"] == want["count"]  # one CPU each (100% cap)
        assert row["headroom_ram"] == pytest.approx(0.8 * ram_gib * GiB - want["p95"])
        # Every plan's VEs use a quarter of their RAM at p95 and 0.1 of a CPU.
        cpu_p95 = sorted(0.1 * want["count"] + 0.4 * sum(
            1 for i in range(200) if i % 3 == NODES.index((name, ram_gib, cpus))
            and i % 24 == hour) for hour in range(24))[22]
        assert row["cpu_p95"] == pytest.approx(cpu_p95)
        for plan in plans:
            by_ram = (0.8 * ram_gib * GiB - want["p95"]) / (plan.ram_mb * MiB * 0.25)
            by_cpu = (0.8 * cpus - cpu_p95) / (1 * 0.1)
            # and never more than the node may still sell: RAM, swap (none), CPUs, disk
            by_sales = min((RAM_RATIO * ram_gib * GiB - want["sold"]) / (plan.ram_mb * MiB),
                           (CPU_RATIO * cpus - want["count"]) / 1,
                           (10000 * GiB - want["count"] * 10 * GiB) / (10 * GiB))
            expected = max(0, math.floor(min(by_ram, by_cpu, by_sales)))
            assert row["fits"][plan.name] == expected, plan
            fits.add(expected)
    assert len(fits) > 2 and max(fits) > 0  # the fixture exercises real numbers
    # Worked out on paper: n1 has VEs 0, 3, ..., 198 (67), n3 has 2, 5, ..., 197 (66).
    assert (rows["n1"]["ves"], rows["n2"]["ves"], rows["n3"]["ves"]) == (67, 67, 66)


def test_plan_figures_are_shares_of_what_they_sell(fleet):
    rows = {row["plan"]: row for row in reports.plan_report(days=1, now=NOW)}
    for mb in PLAN_RAM:
        row = rows[f"P{mb}"]
        assert row["ves"] == 40 and row["measured"] == 40
        assert row["ram_p95_share"] == pytest.approx(0.25)
        assert row["cpu_p95_share"] == pytest.approx(0.1)
        assert row["disk_used_share"] == pytest.approx(0.2)


def test_the_report_page_and_its_csv(fleet, client):
    staff = make_staff("boss", password="boss-pass-1")
    verified_login(client, staff)
    page = client.get("/staff/reports/overcommit/?days=1")
    assert page.status_code == 200 and 'data-node="n1"' in page.content.decode()
    response = client.get("/staff/reports/overcommit/?days=1&format=csv&table=nodes")
    assert response["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {row["node"] for row in table} >= {"n1", "n2", "n3"}
    n3 = next(row for row in table if row["node"] == "n3")
    assert int(n3["ves"]) == 66 and "fits_P256" in n3
    plans = client.get("/staff/reports/overcommit/?days=1&format=csv&table=plans")
    assert "ram_p95_share" in plans.content.decode().splitlines()[0]
    signals = client.get("/staff/reports/overcommit/?format=csv&table=rightsizing")
    assert signals.content.decode().splitlines()[0] == "veid,hostname,plan,node,signal,detail"
    assert 'id="rightsizing-report"' in page.content.decode()
    assert 'id="runway-report"' in page.content.decode()
    assert 'id="episodes-report"' in page.content.decode()
    runway = client.get("/staff/reports/overcommit/?days=1&format=csv&table=runway")
    assert runway.content.decode().splitlines()[0] == \
        "node,ram_days,disk_days,sales_days,sales_limit"
    assert client.get("/staff/reports/overcommit/?format=csv&table=x").status_code == 400


def test_rightsizing_finds_tight_and_idle_ves(catalogue):
    from hosting.usage.reports import rightsizing
    plan = catalogue["plan"]  # 128 MiB
    limit = plan.ram_mb * MiB

    def ve(veid):
        return VE.objects.create(veid=veid, owner=catalogue["customer"], plan=plan,
                                 node=catalogue["node"], template=catalogue["template"],
                                 hostname=f"r{veid}.example.com", actual_state="running")
    tight, busy, idle, short = ve(501), ve(502), ve(503), ve(504)
    rows = []
    for hour in range(60 * 24):  # 60 days of hours up to NOW
        moment = NOW - timedelta(hours=60 * 24 - hour)
        recent = moment >= NOW - timedelta(days=30)
        # 501: 95% of its RAM in 2 of every 3 recent hours; 502: at 95% only a third.
        rows.append(UsageRollup(environment=tight, resolution=3600, samples=1, time=moment,
                                ram_avg=limit * (0.95 if hour % 3 else 0.5), cpu_avg=0.3))
        rows.append(UsageRollup(environment=busy, resolution=3600, samples=1, time=moment,
                                ram_avg=limit * (0.95 if hour % 3 == 0 else 0.5),
                                cpu_avg=0.3))
        rows.append(UsageRollup(environment=idle, resolution=3600, samples=1, time=moment,
                                ram_avg=limit * 0.2, cpu_avg=0.001, rx_avg=10, tx_avg=10))
        if recent:  # idle too, but only 30 days known: not yet "idle for 60 days"
            rows.append(UsageRollup(environment=short, resolution=3600, samples=1,
                                    time=moment, ram_avg=1, cpu_avg=0.0))
    UsageRollup.objects.bulk_create(rows)
    found = {(s["veid"], s["signal"]) for s in rightsizing(now=NOW)}
    assert found == {(501, "tight"), (503, "idle")}


def test_runway_runs_the_growth_forward(catalogue):
    from hosting.usage.reports import runway
    node = Node.objects.create(name="grow", state="online", ram_bytes=10 * GiB, cpus=4,
                               disk_bytes=100 * GiB)  # RAM x1.5 may be sold, risk 80%
    plan = Plan.objects.create(name="G", ram_mb=4096, disk_gib=50, inodes=100000,
                               monthly_price=Decimal("1"))
    ve = VE.objects.create(veid=777, owner=catalogue["customer"], plan=plan, node=node,
                           template=catalogue["template"], hostname="grow.example.com",
                           actual_state="running")
    VE.objects.filter(pk=ve.pk).update(created=NOW - timedelta(days=5))
    since = NOW - timedelta(days=10)
    UsageRollup.objects.bulk_create([  # day d: RAM 1 + 0.1 d GiB, disk 1 + d GiB
        UsageRollup(environment=ve, resolution=3600, samples=1,
                    time=since + timedelta(days=d, hours=h),
                    ram_avg=(1 + 0.1 * d) * GiB, disk_max=(1 + d) * GiB)
        for d in range(10) for h in range(24)])
    rows = {row["node"]: row for row in runway(days=10, now=NOW)}
    grow = rows["grow"]
    # RAM: 1.9 GiB on the last day, +0.1 a day, to 80% of 10 GiB: (8 - 1.9) / 0.1.
    assert grow["ram_days"] == pytest.approx(61)
    assert grow["disk_days"] == pytest.approx(90)  # (100 - 10) / 1
    # Sales, every resource sold: RAM 4 GiB in 10 days of 15 (11 / 0.4 = 27.5 days),
    # CPUs 4 (no CPU count: all of the node's) of 16 (12 / 0.4 = 30), disk 50 GiB of 100
    # (50 / 5 = 10): the disk runs out first.
    assert grow["sales_days"] == pytest.approx(10)
    assert grow["sales_limit"] == "disk"
    # The fleet adds the catalogue's empty node (8 GiB, 500 GiB disk): more room, same growth.
    fleet = rows["fleet"]
    assert fleet["ram_days"] == pytest.approx((8 + 6.4 - 1.9) / 0.1)
    assert fleet["disk_days"] == pytest.approx(590)
    spare = catalogue["node"]
    assert fleet["sales_days"] == pytest.approx(min(
        (11 + 12) / 0.4,  # RAM GiB
        (12 + 4 * spare.cpus) / 0.4,  # CPUs
        (50 + spare.disk_bytes / GiB) / 5))  # disk GiB
    assert rows[spare.name]["sales_days"] is None  # nothing sold there lately
    assert rows[catalogue["node"].name]["ram_days"] is None  # nothing grows there


def test_noisy_neighbours_name_the_ves_behind_a_pressure_episode(catalogue, monkeypatch):
    from hosting.usage.reports import noisy_neighbours
    node = Node.objects.create(name="busy", state="online", ram_bytes=10 * GiB, cpus=4,
                               disk_bytes=100 * GiB)  # risk 80%: 8 GiB
    plan = Plan.objects.create(name="N", ram_mb=8192, disk_gib=10, inodes=100000,
                               monthly_price=Decimal("1"))
    usual = {"x": 1, "y": 3, "z": 1, "w": 1}  # GiB; x jumps to 6 GiB in hours 10-12
    ves = {name: VE.objects.create(veid=880 + i, owner=catalogue["customer"], plan=plan,
                                   node=node, template=catalogue["template"],
                                   hostname=f"{name}.example.com", actual_state="running")
           for i, name in enumerate(usual)}
    start = NOW - timedelta(hours=24)
    UsageRollup.objects.bulk_create([
        UsageRollup(environment=ves[name], resolution=3600, samples=1,
                    time=start + timedelta(hours=h), cpu_avg=0.1,
                    ram_avg=(6 if name == "x" and 10 <= h <= 12 else gib) * GiB)
        for name, gib in usual.items() for h in range(24)])
    (episode,) = noisy_neighbours(days=1, now=NOW)
    assert (episode["node"], episode["resource"], episode["hours"]) == ("busy", "ram", 3)
    assert episode["start"] == (start + timedelta(hours=10)).timestamp()
    assert episode["peak"] == pytest.approx(11 / 8)  # 6 + 3 + 1 + 1 GiB over 8
    assert episode["drivers"][0]["hostname"] == "x.example.com"
    assert episode["drivers"][0]["share"] == pytest.approx(18 / 33)
    from django.test import Client
    client = Client()
    verified_login(client, make_staff("boss", password="boss-pass-1"))
    from hosting.usage import period
    monkeypatch.setattr(period.timezone, "now", lambda: NOW)  # the page's "last day"
    exported = client.get("/staff/reports/overcommit/?days=1&format=csv&table=episodes")
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert [(r["node"], r["resource"], r["hours"]) for r in rows] == [("busy", "ram", "3")]
    assert rows[0]["driver_text"].startswith("880 x.example.com (55%)")


@pytest.fixture
def pools(fleet, catalogue):
    """Addresses enough for every node, so real orders can be placed."""
    from hosting.ipam.models import IPPool
    v4 = IPPool.objects.create(name="fleet4", network="198.18.64.0/20",
                               gateway="198.18.64.1", first="198.18.64.2",
                               last="198.18.79.254")
    v6 = IPPool.objects.create(name="fleet6", network="fd00:64::/64", first="fd00:64::10",
                               last="fd00:64::ffff")
    for node in Node.objects.all():
        v4.nodes.add(node)
        v6.nodes.add(node)
    return fleet


def test_what_if_and_real_orders_place_alike(pools, catalogue):
    from hosting.core.errors import Conflict
    from hosting.environments import services
    from hosting.usage import capacity, whatif
    nodes, plans, ves = pools
    capacity.refresh(now=NOW)  # what the beat stores each hour
    big = plans[-1]  # P4096: each expected at a quarter (its VEs' observed p95)
    asked = whatif.add(big, 200)
    assert 0 < len(asked["placed"]) < 200 and asked["unplaced"]
    assert {node for _, node in asked["placed"]} >= {"n1", "n2"}  # spread by use left
    for i, (_, expected_node) in enumerate(asked["placed"]):
        services.order(catalogue["customer"], big, catalogue["template"], f"w{i}.example.com",
                       catalogue["user"], root_password="root-pass-123")
        assert VE.objects.get(hostname=f"w{i}.example.com").node.name == expected_node, i
    with pytest.raises(Conflict) as refused:
        services.order(catalogue["customer"], big, catalogue["template"], "one-more.example.com",
                       catalogue["user"], root_password="root-pass-123")
    assert str(refused.value) == asked["unplaced"][0][1]
    # Node by node, the report's "fits" is the same rule with one node to choose from.
    from hosting.nodes.placement import Fleet
    for node in Node.objects.all():
        assert Fleet([node]).rooms[0].fits(big) == 0


def test_fits_counts_what_placing_one_by_one_places(fleet):
    from hosting.nodes.placement import Fleet
    from hosting.usage import capacity
    profile = capacity.measure(days=1, now=NOW)
    for node in Node.objects.filter(name__startswith="n"):
        for plan in Plan.objects.all():
            counted, fleet_of_one = Fleet([node], profile).rooms[0].fits(plan), \
                Fleet([node], profile)
            placed = 0
            while placed <= counted:
                try:
                    fleet_of_one.place_plan(plan)
                except Exception:
                    break
                placed += 1
            assert placed == counted, (node.name, plan.name)


def test_draining_a_node_moves_each_vps_with_its_own_use(pools):
    from hosting.usage import capacity, whatif
    nodes, plans, ves = pools
    capacity.refresh(now=NOW)
    n3 = Node.objects.get(name="n3")
    moved = whatif.drain(n3)
    mine = [ve for ve in ves if ve.node.name == "n3"]
    assert len(moved["placed"]) + len(moved["unplaced"]) == len(mine) == 66
    assert not moved["unplaced"]  # n1 and n2 (and the empty hn1) have the room
    assert {row["node"] for row in moved["nodes"]} == {"hn1", "n1", "n2"}  # n3 not a target
    by_label = {label: node for label, node in moved["placed"]}
    for row in moved["nodes"]:
        node = Node.objects.get(name=row["node"])
        arriving = [ve for ve in mine if by_label[f"{ve.veid} {ve.hostname}"] == node.name]
        assert row["added"] == len(arriving)
        # Each arrives with its own p95: a quarter of its plan's RAM (idle most hours).
        own = sum(ve.plan.ram_mb * MiB * 0.25 for ve in arriving)
        assert row["after"]["ram_use"] * node.ram_bytes == pytest.approx(
            row["before"]["ram_use"] * node.ram_bytes + own)
        sold = sum(ve.plan.ram_mb * MiB for ve in arriving)
        assert row["after"]["ram_overcommit"] == pytest.approx(
            row["before"]["ram_overcommit"] + sold / node.ram_bytes)
    biggest_first = [label for label, _ in moved["placed"]][:14]
    assert all(label.startswith(str(ve.veid)) for label, ve in zip(
        biggest_first, sorted((ve for ve in mine if ve.plan.ram_mb == 4096),
                              key=lambda ve: ve.veid)))


def test_the_what_if_on_the_report_page_and_as_csv(pools, client):
    from hosting.usage import capacity
    capacity.refresh(now=NOW)
    verified_login(client, make_staff("boss", password="boss-pass-1"))
    plan = Plan.objects.get(name="P1024")
    page = client.get(f"/staff/reports/overcommit/?days=1&whatif=add&plan={plan.pk}&count=25")
    text = page.content.decode()
    assert page.status_code == 200 and 'id="whatif-report"' in text
    assert "25 more VPSes of plan P1024: 25 placed" in text
    table = list(csv.DictReader(io.StringIO(client.get(
        f"/staff/reports/overcommit/?whatif=add&plan={plan.pk}&count=25&format=csv"
        "&table=whatif").content.decode())))
    assert sum(int(row["added"]) for row in table) == 25
    assert {"before_ram_overcommit", "after_headroom_ram"} <= set(table[0])
    per_vps = client.get(f"/staff/reports/overcommit/?whatif=add&plan={plan.pk}&count=3"
                         "&format=csv&table=placements").content.decode().splitlines()
    assert per_vps[0] == "vps,node,why_not" and len(per_vps) == 4
    n1 = Node.objects.get(name="n1")
    node_page = client.get(f"/staff/nodes/{n1.pk}/").content.decode()
    from hosting.usage.templatetags.report_format import iec
    from hosting.nodes.placement import Fleet
    room = Fleet([n1]).rooms[0]
    ram = iec(room.use.ram)  # binary units, IEC names (GiB)
    assert f"Expected use (what placement counts): {ram} RAM" in \
        node_page.replace("&nbsp;", " ").replace("\xa0", " ")
    assert f"?whatif=drain&amp;node={n1.pk}#whatif" in node_page
    drained = client.get(f"/staff/reports/overcommit/?whatif=drain&node={n1.pk}").content.decode()
    assert "drain node n1: 67 placed" in drained and 'id="whatif-moves"' in drained
    for query, message in (("whatif=add&plan=999999&count=2", "choose a plan"),
                           (f"whatif=add&plan={plan.pk}&count=0", "between 1 and 10000"),
                           (f"whatif=add&plan={plan.pk}&count=x", "not a whole number"),
                           ("whatif=drain&node=abc", "not a whole number"),
                           ("whatif=grow", "whatif=add or whatif=drain")):
        page = client.get(f"/staff/reports/overcommit/?{query}")
        assert page.status_code == 200 and message in page.content.decode(), query
        csv_answer = client.get(f"/staff/reports/overcommit/?{query}&format=csv&table=whatif")
        assert csv_answer.status_code == 400 and message in csv_answer.content.decode()
    assert VE.objects.count() == 200  # asking placed nothing
