"""Overcommit and density reports: what was sold next to what is really used.

Built from the hourly rollups of a period (default the last 30 days),
aggregated by the database (period.py). For a node, its total usage in an
hour is the sum of its VEs' hourly averages; the report gives that total's
p95 and peak against the physical size, next to what was sold (plans'
limits) and the overcommit ratio. The *coincident-peak factor* is the sum of
each VE's own p95 over the p95 of the sum: 1.0 means the VEs peak together;
3.0 means their peaks overlap so little that a third of the sum of peaks is
ever needed at once. *Headroom* (what the node may still use at its risk
level, ``Node.risk_pct`` of physical RAM and CPUs) and how many more VEs of
each plan fit are the placement rule's (hosting/nodes/placement.py) on the
usage of the same period.
"""

import hashlib
from collections import defaultdict

from django.db.models import (Count, ExpressionWrapper, F, FloatField, Max, Min, Q, Sum,
                              Value)
from django.db.models.functions import Coalesce
from django.utils import timezone

from hosting.nodes import placement
from hosting.nodes.placement import ratio as _ratio
from hosting.nodes.models import Node
from hosting.plans.models import Plan

from . import capacity, sampling
from .period import Period

GIB = 1 << 30


def plan_report(days=30, now=None, profile=None, period=None):
    """Per plan: observed RAM and CPU p95 as shares of the limits (the median over its
    measured VEs, as placement uses them), and disk used of sold.

    ``period``/``profile``: the Period and its capacity.measure(), if the caller has them.
    """
    period = period or Period(days, now, stand_in=True)
    profile = profile or capacity.measure(period=period)
    rows = []
    for plan in Plan.objects.all():
        ves = list(plan.environments.live().values_list("pk", flat=True))
        disks = [period.last_disk[pk] for pk in ves if pk in period.last_disk]
        use = profile.plans.get(plan.pk)
        rows.append({
            "plan": plan.name, "ves": len(ves), "measured": use.measured if use else 0,
            "ram_p95_share": use.ram_share if use else None,
            "cpu_p95_share": use.cpu_share if use else None,
            "disk_used_share": (sum(disks) / len(disks) / (plan.disk_gib * GIB))
            if disks and plan.disk_gib else None})
    return rows


def node_report(days=30, now=None, profile=None, period=None):
    """Per node: sold vs physical, usage p95/peak vs physical, coincidence, headroom, fits.

    ``period``/``profile``: the Period and its capacity.measure(), if the caller has them.
    """
    period = period or Period(days, now, stand_in=True)
    profile = profile or capacity.measure(period=period)
    plans = list(Plan.objects.filter(active=True))
    from hosting.environments.models import VirtualEnvironment as VE
    # What the VPSes last on each node (terminated ones while kept) hold in backups.
    backup_bytes = dict(VE.objects.values("node").annotate(total=Sum("backup_bytes"))
                        .values_list("node", "total"))
    rows = []
    nodes = list(Node.objects.all())
    live = placement.live_ves([node.pk for node in nodes])
    for node in nodes:
        ves = live[node.pk]
        totals = period.all_totals.get(node.pk, {}).values()
        ram_totals, cpu_totals = [t[0] for t in totals], [t[1] for t in totals]
        disk_totals = [t[2] for t in totals if t[2] is not None]
        own_ram = sum(period.ram_p95.get(ve.pk, 0) for ve in ves)
        own_cpu = sum(period.cpu_p95.get(ve.pk, 0) for ve in ves)
        room = placement.Room(node, profile, ves)
        sold = room.sold
        ram_p95, cpu_p95 = sampling.p95(ram_totals), sampling.p95(cpu_totals)
        rows.append({
            "node": node.name, "ves": len(ves), "cpus": node.cpus,
            "ves_per_core": len(ves) / node.cpus if node.cpus else None,
            "ram_physical": node.ram_bytes, "ram_sold": sold.ram,
            "ram_overcommit": _ratio(sold.ram, node.ram_bytes),
            "swap_sold": sold.swap, "swap_overcommit": _ratio(sold.swap, node.ram_bytes),
            "cpu_sold": float(sold.cpu), "cpu_overcommit": _ratio(float(sold.cpu), node.cpus),
            "disk_physical": node.disk_bytes, "disk_sold": sold.disk,
            "disk_overcommit": _ratio(sold.disk, node.disk_bytes),
            "disk_p95": sampling.p95(disk_totals),
            "disk_peak": max(disk_totals) if disk_totals else None,
            "backup_bytes": backup_bytes.get(node.pk) or 0,
            "ram_p95": ram_p95, "ram_peak": max(ram_totals) if ram_totals else None,
            "ram_p95_of_physical": _ratio(ram_p95, node.ram_bytes),
            "cpu_p95": cpu_p95, "cpu_peak": max(cpu_totals) if cpu_totals else None,
            "cpu_p95_of_physical": _ratio(cpu_p95, node.cpus),
            "ram_coincidence": _ratio(own_ram, ram_p95),
            "cpu_coincidence": _ratio(own_cpu, cpu_p95),
            "risk_pct": node.risk_pct,
            "headroom_ram": room.limit.ram - room.use.ram,
            "headroom_cpu": room.limit.cpu - room.use.cpu,
            "fits": {plan.name: room.fits(plan) for plan in plans}})
    return rows


# Right-sizing: a VE above this share of its RAM in more than half of the
# hours of the last 30 days needs a bigger plan; one that barely used a CPU
# or the network in any hour of the last 60 days is idle.
TIGHT_RAM_SHARE, TIGHT_DAYS = 0.9, 30
IDLE_CPU, IDLE_BYTES_PER_S, IDLE_DAYS = 0.01, 1024, 60


def rightsizing(now=None):
    """[{veid, hostname, plan, node, signal: "tight"|"idle", detail}] for live VEs."""
    from hosting.environments.models import VirtualEnvironment as VE
    recent, long = _rightsizing_periods(now)
    tight = recent.remember("tight", lambda: _tight(recent))
    idle = long.remember("idle", lambda: _idle(long))
    found = defaultdict(list)  # {VE pk: [(signal, detail)]}: VEs are read for these only
    for pk in set(tight) | set(idle):
        hours, above = tight.get(pk, (0, 0))
        if hours and above > hours / 2:
            found[pk].append(("tight", (
                f"above {TIGHT_RAM_SHARE:.0%} of its RAM in {above} of {hours} "
                "hours: a bigger plan")))
        quiet = idle.get(pk)
        first, last, cpu, net = quiet if quiet else (None, None, None, None)
        covered = (last - first).days + 1 if quiet else 0
        if covered >= IDLE_DAYS - 1 and cpu < IDLE_CPU and net < IDLE_BYTES_PER_S:
            found[pk].append(("idle", (
                f"idle for {covered} days (under {IDLE_CPU} CPUs and "
                f"{IDLE_BYTES_PER_S} B/s every hour): downsize or reclaim")))
    signals = []
    for ve in VE.objects.live().filter(pk__in=list(found)) \
            .select_related("plan", "node").order_by("veid"):
        base = {"veid": ve.veid, "hostname": ve.hostname, "plan": ve.plan.name,
                "node": ve.node.name}
        signals += [dict(base, signal=signal, detail=detail) for signal, detail in found[ve.pk]]
    return signals


def store_rightsizing(now=None):
    """Compute and store the figures ``rightsizing`` reads unless current (period.py's
    ``store``); return whether any was computed."""
    recent, long = _rightsizing_periods(now)
    computed = [recent.store("tight", lambda: _tight(recent)),
                long.store("idle", lambda: _idle(long))]
    return any(computed)


def _rightsizing_periods(now):
    now = now or timezone.now()
    return Period(TIGHT_DAYS, now, stand_in=True), Period(IDLE_DAYS, now, stand_in=True)


def _tight(period):
    """{VE pk: (hours measured, hours above TIGHT_RAM_SHARE of its plan's RAM)}."""
    limit = ExpressionWrapper(F("environment__plan__ram_mb") * TIGHT_RAM_SHARE * (1 << 20),
                              output_field=FloatField())
    return {pk: (hours, above) for pk, hours, above in period.rows().values("environment_id")
            .annotate(hours=Count("id"), above=Count("id", filter=Q(ram_avg__gte=limit)))
            .values_list("environment_id", "hours", "above")}


def _idle(period):
    """{VE pk: (first, last, cpu, net)}: its first and last measured hour and its
    busiest hour's CPUs and bytes/s."""
    zero = Value(0.0)
    rows = period.rows().values("environment_id").annotate(
        first=Min("time"), last=Max("time"), cpu=Max(Coalesce("cpu_avg", zero)),
        net=Max(Coalesce("rx_avg", zero) + Coalesce("tx_avg", zero)))
    return {pk: tuple(values) for pk, *values in
            rows.values_list("environment_id", "first", "last", "cpu", "net")}


def runway(days=30, now=None, period=None):
    """Days until each node (and the fleet) runs out, at the growth of the period.

    Usage: a least-squares line through the daily values of the node's RAM
    use (the mean of the day's hourly totals) and disk use (the day's
    highest hourly total), run forward to the node's risk level of physical
    RAM, and to its whole disk. Sales: for every resource sold (RAM, swap,
    CPUs, disk), what VEs made in the period took per day, run forward to what
    the node may sell of it (physical times its overcommit ratio); the first
    to run out ends the runway and is named in ``sales_limit``, as placement
    refuses on any of them. None: not growing (or nothing measured), so no end in sight.
    """
    from hosting.environments.models import VirtualEnvironment as VE
    period = period or Period(days, now, stand_in=True)
    since = period.since.timestamp()
    rows, fleet = [], {"ram_room": 0.0, "disk_room": 0.0}
    fleet_sold_room, fleet_sold_rate = defaultdict(float), defaultdict(float)
    fleet_ram, fleet_disk = defaultdict(float), defaultdict(float)
    nodes = list(Node.objects.all())
    live = placement.live_ves([node.pk for node in nodes])
    made_since = set(VE.objects.live().filter(created__gte=period.since)
                     .values_list("pk", flat=True))
    for node in nodes:
        ram_hours, disk_use = defaultdict(list), defaultdict(float)
        for hour, (ram, _, disk) in period.all_totals.get(node.pk, {}).items():
            day = int((hour - since) // 86400)
            ram_hours[day].append(ram)
            disk_use[day] = max(disk_use[day], disk or 0)
        ram_use = {day: sum(values) / len(values) for day, values in ram_hours.items()}
        new_sold = placement.Demand(0, 0, 0, 0)
        for ve in live[node.pk]:
            if ve.pk in made_since:
                new_sold = placement.Demand(*(a + float(b) for a, b in zip(
                    new_sold, placement.demand(ve.plan, node.cpus))))
        room_sold = {name: float(cap) - float(used) for name, cap, used in
                     zip(placement.Demand._fields, placement.capacity(node),
                         placement.sold(node, live[node.pk]))}
        rate = {name: float(value) / period.days
                for name, value in zip(placement.Demand._fields, new_sold)}
        sales_days, sales_limit = _sales_left(room_sold, rate)
        ram_room = node.ram_bytes * node.risk_pct / 100
        rows.append({
            "node": node.name,
            "ram_days": _days_left(ram_use, ram_room),
            "disk_days": _days_left(disk_use, node.disk_bytes),
            "sales_days": sales_days, "sales_limit": sales_limit})
        for day, value in ram_use.items():
            fleet_ram[day] += value
        for day, value in disk_use.items():
            fleet_disk[day] += value
        fleet["ram_room"] += ram_room
        fleet["disk_room"] += node.disk_bytes
        for name in placement.Demand._fields:
            fleet_sold_room[name] += room_sold[name]
            fleet_sold_rate[name] += rate[name]
    sales_days, sales_limit = _sales_left(fleet_sold_room, fleet_sold_rate)
    rows.append({"node": "fleet", "ram_days": _days_left(fleet_ram, fleet["ram_room"]),
                 "disk_days": _days_left(fleet_disk, fleet["disk_room"]),
                 "sales_days": sales_days, "sales_limit": sales_limit})
    return rows


def _sales_left(room, rate):
    """(days until the first resource sold at ``rate`` a day fills its ``room``, that
    resource), or (None, "") when nothing is being sold."""
    left = [(max(0.0, room[name] / rate[name]), name) for name in rate if rate[name] > 0]
    return min(left) if left else (None, "")


def _days_left(daily, limit):
    """Days from the last measured day until the fitted line through ``daily``
    ({day index: value}) reaches ``limit``; None if it does not grow."""
    if len(daily) < 2:
        return None
    xs, ys = zip(*sorted(daily.items()))
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    if slope <= 0:
        return None
    at_last = mean_y + slope * (xs[-1] - mean_x)
    return max(0.0, (limit - at_last) / slope)


def noisy_neighbours(days=7, now=None, top=3, period=None):
    """Pressure episodes: runs of hours in which a node's total RAM or CPU use passed
    its risk level, each with the VEs that drove it (most above their own usual
    use over the episode first). [{node, resource, start, end, hours, peak, drivers}]

    A stored period figure (housekeeping's ``store_episodes``): a node over its level
    for much of the period has its VEs' rollups of all those hours read."""
    period = period or Period(days, now, stand_in=True)
    return period.remember(_episodes_name(top), lambda: _episodes(period, top))


def store_episodes(period, top=3):
    """Store ``noisy_neighbours``'s figure of ``period`` unless current; return whether
    it was computed."""
    return period.store(_episodes_name(top), lambda: _episodes(period, top))


def _episodes_name(top):
    """The figure's name, with the nodes' sizes and risk levels in it: a node changed by
    staff has other episodes over the same rollups."""
    nodes = list(Node.objects.order_by("pk").values_list("pk", "ram_bytes", "cpus",
                                                          "risk_pct"))
    return f"episodes-{top}-{hashlib.sha256(repr(nodes).encode()).hexdigest()[:16]}"


def _episodes(period, top):
    episodes = []
    for node in Node.objects.all():
        totals = period.all_totals.get(node.pk, {})
        for index, resource, limit in ((0, "ram", node.ram_bytes * node.risk_pct / 100),
                                       (1, "cpu", node.cpus * node.risk_pct / 100)):
            hot = sorted(hour for hour, total in totals.items() if limit and total[index] > limit)
            if not hot:
                continue
            ves = {ve.pk: ve for ve in node.environments.live()}
            usual = period.medians[index]  # each VE's median hour
            during_any = period.at(hot, ves)  # {pk: {hour: (RAM, CPUs)}}, one query
            for run in _runs(hot):
                during = {pk: {h: hours[h] for h in run if h in hours}
                          for pk, hours in during_any.items()}
                during = {pk: hours for pk, hours in during.items() if hours}
                run_total = sum(totals[h][index] for h in run)
                # how far above its own usual (median) use each VE went
                excess = {pk: sum(v[index] for v in hours.values()) / len(hours) -
                          usual.get(pk, 0) for pk, hours in during.items()}
                drivers = sorted(excess, key=lambda pk: (-excess[pk], ves[pk].veid))[:top]
                episodes.append({
                    "node": node.name, "resource": resource,
                    "start": run[0], "end": run[-1] + 3600, "hours": len(run),
                    "peak": max(totals[h][index] for h in run) / limit,
                    "drivers": [{"veid": ves[pk].veid, "hostname": ves[pk].hostname,
                                 "share": sum(v[index] for v in during[pk].values()) /
                                 run_total} for pk in drivers]})
    return sorted(episodes, key=lambda e: -e["start"])


def _runs(hours):
    """Consecutive hours (epoch seconds, sorted) grouped into runs."""
    runs = []
    for hour in hours:
        if runs and hour - runs[-1][-1] == 3600:
            runs[-1].append(hour)
        else:
            runs.append([hour])
    return runs
