"""Usage series of one VE for its graphs: 1 h from raw samples, 24 h and 7 d from
5-minute rollups, 30 d from hourly ones (see sampling.py)."""

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Avg, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import connections, sampling
from .collection import NODE_RAW_FIELDS, RAW_FIELDS
from .models import NodeRollup, NodeSample, UsageRollup, UsageSample

RANGES = {"1h": (timedelta(hours=1), None), "24h": (timedelta(days=1), sampling.FIVE_MINUTES),
          "7d": (timedelta(days=7), sampling.FIVE_MINUTES),
          "30d": (timedelta(days=30), sampling.HOUR)}
SERIES = ("cpu", "ram", "ram_cache", "swap", "disk", "inodes", "processes", "rx", "tx",
          "rx_packets", "tx_packets", "io_read", "io_write", "conntrack")
PEAKS = ("cpu", "ram")  # rollups also give these periods' maxima (a spike is not averaged away)


def usage(ve, range_name, now=None):
    """{"range", "resolution", "start", "end", "time": [epoch s], <metric>: [...],
    "limits": {...}, "connections": {...}}.

    ``start``/``end`` (epoch s) bound the period asked for: graphs span exactly that,
    whatever few samples it holds (one sample alone has no span of its own). Values
    are None where nothing was measured (a stopped VE, a gap). CPU is
    in CPUs busy, traffic and disk I/O in bytes/s, the rest as measured.
    """
    span, resolution = RANGES[range_name]
    now = now or timezone.now()
    since = now - span
    if resolution is None:
        out = _with_gaps(_from_raw(ve, since), settings.NODE_SAMPLE_SECONDS)
    else:
        out = _with_gaps(_from_rollups(ve, since, resolution), resolution)
    plan = ve.plan
    cpus = plan.cpus or None  # "all of the node's" is not shown: no node sizes to customers
    if plan.cpu_limit_pct:
        cpus = min(cpus or 10**6, Decimal(plan.cpu_limit_pct) / 100)
    out.update(range=range_name, resolution=resolution or 0, **_bounds(since, now), limits={
        "ram": plan.ram_mb << 20, "swap": plan.swap_mb << 20, "disk": plan.disk_gib << 30,
        "inodes": plan.inodes, "processes": plan.processes,
        "cpu": float(cpus) if cpus else None, "conntrack": plan.connections or None},
        connections=connections.current(ve, now))
    return out


def _bounds(since, now):
    """The period's ends in epoch seconds, for the graphs' time axis."""
    return {"start": since.timestamp(), "end": now.timestamp()}


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
    out["conntrack_refused"] = values["conntrack_refused"]
    return out


def _from_rollups(ve, since, resolution):
    fields = ["time", "limit_hits", "oom_kills", "conntrack_refused"] + \
        [f"{m}_avg" for m in SERIES] + \
        [f"{m}_max" for m in PEAKS]
    rows = list(UsageRollup.objects.filter(environment=ve, resolution=resolution,
                                           time__gte=since).order_by("time").values(*fields))
    out = {"time": [r["time"].timestamp() for r in rows]}
    out.update({m: [r[f"{m}_avg"] for r in rows] for m in SERIES})
    out.update({f"{m}_max": [r[f"{m}_max"] for r in rows] for m in PEAKS})
    out["limit_hits"] = [r["limit_hits"] + r["oom_kills"] for r in rows]
    out["conntrack_refused"] = [r["conntrack_refused"] for r in rows]
    return out


TOP_VES = 8  # a node's graph names its biggest VEs; the rest are summed as "others"


def node_usage(node, range_name, now=None):
    """Every live VE's RAM and CPU on ``node`` over ``range_name``, for stacked graphs,
    with the node's own measured totals (MemTotal - MemAvailable: host processes in)
    and its physical capacity: {"time", "ves": [{veid, hostname, ram, cpu}],
    "node": {"ram", "cpu"}, "capacity": {"ram", "cpus"}, "start", "end"} (``start``/``end``
    as in ``usage``). The biggest TOP_VES VEs
    (by average RAM) are shown on their own, the others summed."""
    from hosting.environments.models import VirtualEnvironment as VE
    span, resolution = RANGES[range_name]
    now = now or timezone.now()
    since = now - span
    ves = {ve.pk: ve for ve in VE.objects.filter(node=node).live().order_by("pk")}
    if resolution is None:
        per_ve = _raw_of_node(list(ves), since)
        means = {pk: _mean([ram for ram, _ in series.values()]) for pk, series in per_ve.items()}
    else:
        rows = UsageRollup.objects.filter(environment_id__in=list(ves), resolution=resolution,
                                          time__gte=since)
        means = dict(rows.values("environment_id").annotate(mean=Avg("ram_avg"))
                     .values_list("environment_id", "mean"))
    ranked = sorted(ves, key=lambda pk: -(means.get(pk) or 0))
    top, rest = ranked[:TOP_VES], ranked[TOP_VES:]
    if resolution is None:
        others = defaultdict(lambda: [0.0, 0.0])
        for pk in rest:
            for moment, (ram, cpu) in per_ve.get(pk, {}).items():
                others[moment][0] += ram or 0
                others[moment][1] += cpu or 0
    else:
        per_ve = defaultdict(dict)  # the series of the VEs shown on their own
        for pk, moment, ram, cpu in rows.filter(environment_id__in=top).values_list(
                "environment_id", "time", "ram_avg", "cpu_avg"):
            per_ve[pk][moment.timestamp()] = (ram, cpu)
        zero = Value(0.0)
        others = {moment.timestamp(): (ram, cpu) for moment, ram, cpu in
                  rows.filter(environment_id__in=rest).values("time").annotate(
                      ram=Sum(Coalesce("ram_avg", zero)), cpu=Sum(Coalesce("cpu_avg", zero)))
                  .values_list("time", "ram", "cpu")}
    own = _node_totals(node, since, resolution)
    timeline = sorted(set(own).union(others, *(per_ve.get(pk, {}) for pk in top)))

    def column(values, index, missing=None):
        return [values.get(t, (missing, missing))[index] for t in timeline]

    shown = [{"veid": ves[pk].veid, "hostname": ves[pk].hostname,
              "ram": column(per_ve.get(pk, {}), 0), "cpu": column(per_ve.get(pk, {}), 1)}
             for pk in top]
    if rest:  # an hour none of them reported sums to 0, as the stack needs
        shown.append({"veid": None, "hostname": f"{len(rest)} others",
                      "ram": column(others, 0, 0), "cpu": column(others, 1, 0)})
    return {"range": range_name, "resolution": resolution or 0, **_bounds(since, now),
            "time": timeline, "ves": shown,
            "node": {"ram": column(own, 0), "cpu": column(own, 1)},
            "capacity": {"ram": node.ram_bytes, "cpus": node.cpus}}


def _raw_of_node(env_ids, since):
    """{VE pk: {epoch s: (RAM, CPUs busy)}} from the raw samples since ``since``, in one
    query (from a few samples earlier, so the first point has a CPU rate too)."""
    rows = UsageSample.objects.filter(
        environment_id__in=env_ids,
        time__gte=since - timedelta(seconds=3 * settings.NODE_SAMPLE_SECONDS)).order_by(
        "environment_id", "time").values("environment_id", "time", "ram", "cpu_ns")
    by_ve = defaultdict(list)
    for row in rows:
        by_ve[row["environment_id"]].append(row)
    out = {}
    for pk, samples in by_ve.items():
        values = sampling.series(samples)
        out[pk] = {s["time"].timestamp(): (ram, cpu) for s, ram, cpu in
                   zip(samples, values["ram"], values["cpu"]) if s["time"] >= since}
    return out


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else 0


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
