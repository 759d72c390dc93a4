"""Usage series of one VE for its graphs: 1 h from raw samples, 24 h and 7 d from
5-minute rollups, 30 d from hourly ones (see sampling.py)."""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from . import sampling
from .collection import NODE_RAW_FIELDS, RAW_FIELDS
from .models import NodeRollup, NodeSample, UsageRollup, UsageSample

RANGES = {"1h": (timedelta(hours=1), None), "24h": (timedelta(days=1), sampling.FIVE_MINUTES),
          "7d": (timedelta(days=7), sampling.FIVE_MINUTES),
          "30d": (timedelta(days=30), sampling.HOUR)}
SERIES = ("cpu", "ram", "swap", "disk", "inodes", "processes", "rx", "tx", "io_read", "io_write")
PEAKS = ("cpu", "ram")  # rollups also give these periods' maxima (a spike is not averaged away)


def usage(ve, range_name, now=None):
    """{"range", "resolution", "time": [epoch s], <metric>: [...], "limits": {...}}.

    Values are None where nothing was measured (a stopped VE, a gap). CPU is
    in CPUs busy, traffic and disk I/O in bytes/s, the rest as measured.
    """
    span, resolution = RANGES[range_name]
    since = (now or timezone.now()) - span
    if resolution is None:
        out = _with_gaps(_from_raw(ve, since), settings.NODE_SAMPLE_SECONDS)
    else:
        out = _with_gaps(_from_rollups(ve, since, resolution), resolution)
    plan = ve.plan
    cpus = plan.cpus or None  # "all of the node's" is not shown: no node sizes to customers
    if plan.cpu_limit_pct:
        cpus = min(cpus or 10**6, Decimal(plan.cpu_limit_pct) / 100)
    out.update(range=range_name, resolution=resolution or 0, limits={
        "ram": plan.ram_mb << 20, "swap": plan.swap_mb << 20, "disk": plan.disk_gib << 30,
        "inodes": plan.inodes, "processes": plan.processes,
        "cpu": float(cpus) if cpus else None})
    return out


def _with_gaps(out, step):
    """Put a point of Nones where samples are missing (more than 1.5 steps apart), so
    a graph shows the gap instead of a straight line across it."""
    times, keys = out["time"], [k for k in out if k != "time"]
    gaps = [i for i in range(1, len(times)) if times[i] - times[i - 1] > 1.5 * step]
    for i in reversed(gaps):
        times.insert(i, times[i - 1] + step)
        for key in keys:
            out[key].insert(i, None)
    return out


def _from_raw(ve, since):
    rows = UsageSample.objects.filter(environment=ve)
    previous = rows.filter(time__lt=since).order_by("-time").values(*RAW_FIELDS).first()
    samples = list(rows.filter(time__gte=since).order_by("time").values(*RAW_FIELDS))
    values = sampling.series(samples, previous)
    out = {"time": [s["time"].timestamp() for s in samples]}
    out.update({name: values[name] for name in SERIES})
    out["limit_hits"] = [(a or 0) + (b or 0) for a, b in zip(values["limit_hits"],
                                                                values["oom_kills"])]
    return out


def _from_rollups(ve, since, resolution):
    fields = ["time", "limit_hits", "oom_kills"] + [f"{m}_avg" for m in SERIES] + \
        [f"{m}_max" for m in PEAKS]
    rows = list(UsageRollup.objects.filter(environment=ve, resolution=resolution,
                                           time__gte=since).order_by("time").values(*fields))
    out = {"time": [r["time"].timestamp() for r in rows]}
    out.update({m: [r[f"{m}_avg"] for r in rows] for m in SERIES})
    out.update({f"{m}_max": [r[f"{m}_max"] for r in rows] for m in PEAKS})
    out["limit_hits"] = [r["limit_hits"] + r["oom_kills"] for r in rows]
    return out


TOP_VES = 8  # a node's graph names its biggest VEs; the rest are summed as "others"


def node_usage(node, range_name, now=None):
    """Every live VE's RAM and CPU on ``node`` over ``range_name``, for stacked graphs,
    with the node's own measured totals (host processes and page cache included)
    and its physical capacity: {"time", "ves": [{veid, hostname, ram, cpu}],
    "node": {"ram", "cpu"}, "capacity": {"ram", "cpus"}}. The biggest TOP_VES VEs
    (by average RAM) are shown on their own, the others summed."""
    from hosting.environments.models import VirtualEnvironment as VE
    span, resolution = RANGES[range_name]
    since = (now or timezone.now()) - span
    ves = {ve.pk: ve for ve in VE.objects.filter(node=node).live()}
    per_ve, times = {}, set()
    if resolution is None:
        for pk in ves:
            series = _from_raw(ves[pk], since)
            per_ve[pk] = {t: (r, c) for t, r, c in zip(series["time"], series["ram"],
                                                       series["cpu"])}
            times.update(series["time"])
    else:
        rows = UsageRollup.objects.filter(environment_id__in=list(ves), resolution=resolution,
                                          time__gte=since)
        for pk, moment, ram, cpu in rows.values_list("environment_id", "time", "ram_avg",
                                                      "cpu_avg"):
            per_ve.setdefault(pk, {})[moment.timestamp()] = (ram, cpu)
            times.add(moment.timestamp())
    own = _node_totals(node, since, resolution)
    timeline = sorted(times | set(own))

    def column(pk, index):
        values = per_ve.get(pk, {})
        return [values.get(t, (None, None))[index] for t in timeline]

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else 0

    ranked = sorted(ves, key=lambda pk: -mean(column(pk, 0)))
    shown = [{"veid": ves[pk].veid, "hostname": ves[pk].hostname, "ram": column(pk, 0),
              "cpu": column(pk, 1)} for pk in ranked[:TOP_VES]]
    rest = ranked[TOP_VES:]
    if rest:
        sums = [[sum(v for v in values if v is not None) for values in zip(*columns)]
                for columns in ([column(pk, 0) for pk in rest], [column(pk, 1) for pk in rest])]
        shown.append({"veid": None, "hostname": f"{len(rest)} others", "ram": sums[0],
                      "cpu": sums[1]})
    return {"range": range_name, "resolution": resolution or 0, "time": timeline, "ves": shown,
            "node": {"ram": [own.get(t, (None, None))[0] for t in timeline],
                     "cpu": [own.get(t, (None, None))[1] for t in timeline]},
            "capacity": {"ram": node.ram_bytes, "cpus": node.cpus}}


def _node_totals(node, since, resolution):
    """{epoch s: (ram used, CPUs busy)} of the node itself, raw or rolled up."""
    if resolution is None:
        rows = NodeSample.objects.filter(node=node)
        previous = rows.filter(time__lt=since).order_by("-time").values(*NODE_RAW_FIELDS).first()
        samples = list(rows.filter(time__gte=since).order_by("time").values(*NODE_RAW_FIELDS))
        values = sampling.series(samples, previous, sampling.NODE)
        return {s["time"].timestamp(): (ram, cpu)
                for s, ram, cpu in zip(samples, values["ram_used"], values["cpu"])}
    rows = NodeRollup.objects.filter(node=node, resolution=resolution, time__gte=since)
    return {moment.timestamp(): (ram, cpu)
            for moment, ram, cpu in rows.values_list("time", "ram_used_avg", "cpu_avg")}
