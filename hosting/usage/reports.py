"""Overcommit and density reports: what was sold next to what is really used.

Built from the hourly rollups of the last ``days`` (default 30). For a node,
its total usage in an hour is the sum of its VEs' hourly averages; the
report gives that total's p95 and peak against the physical size, next to
what was sold (plans' limits) and the overcommit ratio. The *coincident-peak
factor* is the sum of each VE's own p95 over the p95 of the sum: 1.0 means
the VEs peak together; 3.0 means their peaks overlap so little that a third
of the sum of peaks is ever needed at once. *Headroom* is what the node may
still use at its risk level (``Node.risk_pct`` of physical RAM and CPUs for
the p95 total); how many more VEs of a plan fit follows from what that
plan's VEs really use (its p95 share of the limit, from the per-plan report).
"""

from collections import defaultdict
from datetime import timedelta

from django.utils import timezone

from hosting.nodes import placement
from hosting.nodes.models import Node
from hosting.plans.models import Plan

from . import capacity, sampling
from .capacity import hourly as _hourly, median as _median
from .models import UsageRollup

GIB = 1 << 30


def plan_report(days=30, now=None, profile=None):
    """Per plan: observed RAM and CPU p95 as shares of the limits (the median over its
    measured VEs, as placement uses them), and disk used of sold.

    ``profile``: capacity.measure() of the same period, if the caller has it.
    """
    since = (now or timezone.now()) - timedelta(days=days)
    profile = capacity.measure(days, now) if profile is None else profile
    rows = []
    for plan in Plan.objects.all():
        ves = list(plan.environments.live().values_list("pk", flat=True))
        disks = UsageRollup.objects.filter(environment_id__in=ves, resolution=sampling.HOUR,
                                           time__gte=since, disk_max__isnull=False)
        latest = {}  # each VE's disk use in its last measured hour
        for env_id, disk in disks.order_by("time").values_list("environment_id", "disk_max"):
            latest[env_id] = disk
        use = profile.plans.get(plan.pk)
        rows.append({
            "plan": plan.name, "ves": len(ves), "measured": use.measured if use else 0,
            "ram_p95_share": use.ram_share if use else None,
            "cpu_p95_share": use.cpu_share if use else None,
            "disk_used_share": (sum(latest.values()) / len(latest) / (plan.disk_gib * GIB))
            if latest and plan.disk_gib else None})
    return rows


def node_report(days=30, now=None, profile=None):
    """Per node: sold vs physical, usage p95/peak vs physical, coincidence, headroom, fits.

    ``profile``: capacity.measure() of the same period, if the caller has it.
    """
    since = (now or timezone.now()) - timedelta(days=days)
    profile = capacity.measure(days, now) if profile is None else profile
    plans = list(Plan.objects.filter(active=True))
    rows = []
    for node in Node.objects.all():
        ves = list(node.environments.live().select_related("plan"))
        hourly = _hourly([ve.pk for ve in ves], since)
        totals = defaultdict(lambda: [0.0, 0.0])
        own_p95 = [0.0, 0.0]
        for ve in ves:
            series = hourly.get(ve.pk, {})
            for hour, (ram, cpu, _) in series.items():
                totals[hour][0] += ram
                totals[hour][1] += cpu
            if series:
                own_p95[0] += sampling.p95([s[0] for s in series.values()])
                own_p95[1] += sampling.p95([s[1] for s in series.values()])
        ram_totals = [t[0] for t in totals.values()]
        cpu_totals = [t[1] for t in totals.values()]
        room = placement.Room(node, profile, ves)
        sold = room.sold
        ram_p95, cpu_p95 = sampling.p95(ram_totals), sampling.p95(cpu_totals)
        risk = node.risk_pct / 100
        headroom_ram = node.ram_bytes * risk - (ram_p95 or 0)
        headroom_cpu = node.cpus * risk - (cpu_p95 or 0)
        rows.append({
            "node": node.name, "ves": len(ves), "cpus": node.cpus,
            "ves_per_core": len(ves) / node.cpus if node.cpus else None,
            "ram_physical": node.ram_bytes, "ram_sold": sold.ram,
            "ram_overcommit": _ratio(sold.ram, node.ram_bytes),
            "swap_sold": sold.swap, "swap_overcommit": _ratio(sold.swap, node.ram_bytes),
            "cpu_sold": float(sold.cpu), "cpu_overcommit": _ratio(float(sold.cpu), node.cpus),
            "disk_physical": node.disk_bytes, "disk_sold": sold.disk,
            "disk_overcommit": _ratio(sold.disk, node.disk_bytes),
            "ram_p95": ram_p95, "ram_peak": max(ram_totals) if ram_totals else None,
            "ram_p95_of_physical": _ratio(ram_p95, node.ram_bytes),
            "cpu_p95": cpu_p95, "cpu_peak": max(cpu_totals) if cpu_totals else None,
            "cpu_p95_of_physical": _ratio(cpu_p95, node.cpus),
            "ram_coincidence": _ratio(own_p95[0], ram_p95),
            "cpu_coincidence": _ratio(own_p95[1], cpu_p95),
            "risk_pct": node.risk_pct, "headroom_ram": headroom_ram,
            "headroom_cpu": headroom_cpu,
            "fits": _fits(room, plans)})
    return rows


def _fits(room, plans):
    """{plan name: how many more VEs of it the placement rule puts on this node alone}."""
    return {plan.name: room.fits(plan) for plan in plans}


def _ratio(part, whole):
    return part / whole if part is not None and whole else None


# Right-sizing: a VE above this share of its RAM in more than half of the
# hours of the last 30 days needs a bigger plan; one that barely used a CPU
# or the network in any hour of the last 60 days is idle.
TIGHT_RAM_SHARE, TIGHT_DAYS = 0.9, 30
IDLE_CPU, IDLE_BYTES_PER_S, IDLE_DAYS = 0.01, 1024, 60


def rightsizing(now=None):
    """[{veid, hostname, plan, node, signal: "tight"|"idle", detail}] for live VEs."""
    from hosting.environments.models import VirtualEnvironment as VE
    now = now or timezone.now()
    since = now - timedelta(days=IDLE_DAYS)
    rows = UsageRollup.objects.filter(resolution=sampling.HOUR, time__gte=since)
    hours = defaultdict(list)
    for env_id, moment, ram, cpu, rx, tx in rows.values_list(
            "environment_id", "time", "ram_avg", "cpu_avg", "rx_avg", "tx_avg"):
        hours[env_id].append((moment, ram or 0, cpu or 0, (rx or 0) + (tx or 0)))
    signals = []
    for ve in VE.objects.live().filter(pk__in=list(hours)).select_related("plan", "node"):
        series = sorted(hours[ve.pk])
        limit = ve.plan.ram_mb << 20
        recent = [h for h in series if h[0] >= now - timedelta(days=TIGHT_DAYS)]
        tight = [h for h in recent if h[1] >= TIGHT_RAM_SHARE * limit]
        base = {"veid": ve.veid, "hostname": ve.hostname, "plan": ve.plan.name,
                "node": ve.node.name}
        if recent and len(tight) > len(recent) / 2:
            signals.append(dict(base, signal="tight", detail=(
                f"above {TIGHT_RAM_SHARE:.0%} of its RAM in {len(tight)} of {len(recent)} "
                "hours: a bigger plan")))
        covered = (series[-1][0] - series[0][0]).days + 1 if series else 0
        if covered >= IDLE_DAYS - 1 and all(h[2] < IDLE_CPU and h[3] < IDLE_BYTES_PER_S
                                            for h in series):
            signals.append(dict(base, signal="idle", detail=(
                f"idle for {covered} days (under {IDLE_CPU} CPUs and "
                f"{IDLE_BYTES_PER_S} B/s every hour): downsize or reclaim")))
    return signals


def runway(days=30, now=None):
    """Days until each node (and the fleet) runs out, at the growth of the last ``days``.

    Usage: a least-squares line through the daily means of the node's hourly
    total RAM and disk use, run forward to the node's risk level of physical
    RAM, and to its whole disk. Sales: the RAM sold to VEs made in the period,
    per day, run forward to what the node may sell (RAM times its overcommit
    ratio). None: not growing (or nothing measured), so no end in sight.
    """
    now = now or timezone.now()
    since = now - timedelta(days=days)
    rows, fleet = [], {"ram_use": [], "disk_use": [], "ram_room": 0.0, "disk_room": 0.0,
                       "sold_room": 0.0, "sold_per_day": 0.0}
    for node in Node.objects.all():
        ves = list(node.environments.live().select_related("plan"))
        ram_daily, disk_daily = defaultdict(lambda: defaultdict(float)), defaultdict(float)
        for env_id, hours in _hourly([ve.pk for ve in ves], since).items():
            for hour, (ram, _, disk) in hours.items():
                day = int((hour - since.timestamp()) // 86400)
                ram_daily[day][hour] += ram
                if disk is not None:
                    disk_daily[(day, env_id)] = max(disk_daily[(day, env_id)], disk)
        ram_use = {day: sum(h.values()) / len(h) for day, h in ram_daily.items()}
        disk_use = defaultdict(float)
        for (day, _), value in disk_daily.items():
            disk_use[day] += value
        new_sold = sum(ve.plan.ram_mb << 20 for ve in ves if ve.created >= since)
        sold_per_day = new_sold / days
        room_sold = node.ram_bytes * float(node.ram_overcommit) - placement.sold(node).ram
        ram_room = node.ram_bytes * node.risk_pct / 100
        rows.append({
            "node": node.name,
            "ram_days": _days_left(ram_use, ram_room),
            "disk_days": _days_left(disk_use, node.disk_bytes),
            "sales_days": max(0.0, room_sold / sold_per_day) if sold_per_day else None})
        fleet["ram_use"].append(ram_use)
        fleet["disk_use"].append(disk_use)
        fleet["ram_room"] += ram_room
        fleet["disk_room"] += node.disk_bytes
        fleet["sold_room"] += room_sold
        fleet["sold_per_day"] += sold_per_day
    total_ram = defaultdict(float)
    total_disk = defaultdict(float)
    for use in fleet["ram_use"]:
        for day, value in use.items():
            total_ram[day] += value
    for use in fleet["disk_use"]:
        for day, value in use.items():
            total_disk[day] += value
    rows.append({"node": "fleet", "ram_days": _days_left(total_ram, fleet["ram_room"]),
                 "disk_days": _days_left(total_disk, fleet["disk_room"]),
                 "sales_days": max(0.0, fleet["sold_room"] / fleet["sold_per_day"])
                 if fleet["sold_per_day"] else None})
    return rows


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


def noisy_neighbours(days=7, now=None, top=3):
    """Pressure episodes: runs of hours in which a node's total RAM or CPU use passed
    its risk level, each with the VEs that drove it (most above their own usual
    use over the episode first). [{node, resource, start, end, hours, peak, drivers}]"""
    now = now or timezone.now()
    since = now - timedelta(days=days)
    episodes = []
    for node in Node.objects.all():
        ves = {ve.pk: ve for ve in node.environments.live()}
        hourly = _hourly(list(ves), since)
        for index, resource, limit in ((0, "ram", node.ram_bytes * node.risk_pct / 100),
                                       (1, "cpu", node.cpus * node.risk_pct / 100)):
            totals = defaultdict(float)
            for series in hourly.values():
                for hour, values in series.items():
                    totals[hour] += values[index]
            hot = sorted(hour for hour, total in totals.items() if limit and total > limit)
            for run in _runs(hot):
                excess = {}
                for pk, series in hourly.items():
                    usual = _median([v[index] for v in series.values()]) or 0
                    during = [series[h][index] for h in run if h in series]
                    if during:  # how far above its own usual (median) use it went
                        excess[pk] = sum(during) / len(during) - usual
                drivers = sorted(excess, key=lambda pk: -excess[pk])[:top]
                episodes.append({
                    "node": node.name, "resource": resource,
                    "start": run[0], "end": run[-1] + 3600, "hours": len(run),
                    "peak": max(totals[h] for h in run) / limit,
                    "drivers": [{"veid": ves[pk].veid, "hostname": ves[pk].hostname,
                                 "share": sum(hourly[pk][h][index] for h in run
                                              if h in hourly[pk]) /
                                 sum(totals[h] for h in run)} for pk in drivers]})
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
