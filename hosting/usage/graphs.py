"""Usage series of one VE for its graphs: 1 h from raw samples, 24 h and 7 d from
5-minute rollups, 30 d from hourly ones (see sampling.py); and of a node's VEs stacked,
whose rollup ranges housekeeping stores after each rollup run (``store_node_usage``)."""

import hashlib
import math
from collections import defaultdict
from datetime import timedelta, timezone as dt_timezone
from decimal import Decimal

from django.conf import settings
from django.db.models import Avg, CharField, Max, Sum, Value
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import connections, figures, sampling
from .collection import NODE_RAW_FIELDS, RAW_FIELDS
from .models import NodeRollup, NodeSample, UsageRollup, UsageSample

RANGES = {"1h": (timedelta(hours=1), None), "24h": (timedelta(days=1), sampling.FIVE_MINUTES),
          "7d": (timedelta(days=7), sampling.FIVE_MINUTES),
          "30d": (timedelta(days=30), sampling.HOUR)}
SERIES = ("cpu", "ram", "ram_cache", "swap", "disk", "inodes", "processes", "rx", "tx",
          "rx_packets", "tx_packets", "io_read", "io_write", "conntrack")
PEAKS = ("cpu", "ram")  # rollups also give these periods' maxima (a spike is not averaged away)
# How old a stored node series may be to stand in for the current one: one rollup run
# (settings.CELERY_BEAT_SCHEDULE, every 5 minutes) and the time it takes.
STAND_IN = timedelta(minutes=10)


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
# A node's rollup ranges are read as housekeeping stored them after its last rollup run
# (``store_node_usage``): summing them costs a pass over every rollup of the node's VEs
# in the range (720,000 rows for 30 days of 1,000 VEs), 0.9-2.5 s on PostgreSQL.
STORED = ("24h", "7d", "30d")
FIGURE_DAYS = {"24h": 1, "7d": 7, "30d": 30}


def node_usage(node, range_name, now=None):
    """Every live VE's RAM and CPU on ``node`` over ``range_name``, for stacked graphs,
    with the node's own measured totals (MemTotal - MemAvailable: host processes in)
    and its physical capacity: {"time", "ves": [{veid, hostname, ram, cpu}],
    "node": {"ram", "cpu"}, "capacity": {"ram", "cpus"}, "start", "end"} (``start``/``end``
    as in ``usage``). The biggest TOP_VES VEs
    (by average RAM) are shown on their own, the others summed.

    The rollup ranges are the series housekeeping stored for the current data
    (``store_node_usage``), equal to ``compute_node_usage``'s; see ``_stored_series``
    for what stands in when the data changed since."""
    span, resolution = RANGES[range_name]
    now = now or timezone.now()
    since = now - span
    ves = _live_ves(node)
    if range_name in STORED:
        series = _stored_series(node, ves, range_name, since, now)
    else:  # raw samples: new ones every 30 s, nothing to keep
        series = _node_series(node, ves, since, resolution)
    return _node_graph(node, ves, range_name, series, since, now)


def compute_node_usage(node, range_name, now=None):
    """``node_usage`` computed from the rollups (or raw samples) themselves."""
    span, resolution = RANGES[range_name]
    now = now or timezone.now()
    since = now - span
    ves = _live_ves(node)
    return _node_graph(node, ves, range_name, _node_series(node, ves, since, resolution),
                       since, now)


def store_node_usage(now=None):
    """Store every node's series of the STORED ranges that are not current (new rollups,
    a VE made, destroyed or moved, the range's first period passed), each range for
    all such nodes at once; return how many were computed. Housekeeping runs it after
    each rollup run."""
    from hosting.nodes.models import Node
    now = now or timezone.now()
    ves_of = {node: _live_ves(node) for node in Node.objects.order_by("pk")}
    computed = 0
    for range_name in STORED:
        span, resolution = RANGES[range_name]
        due = {}
        for node, ves in ves_of.items():
            version = _series_version(node, ves, now - span, resolution)
            if not figures.has(*_figure_of(node, range_name), version):
                due[node] = (ves, version)
        if not due:
            continue
        series = _fleet_series({node: ves for node, (ves, _) in due.items()}, now - span,
                               resolution)
        for node, (_, version) in due.items():
            figures.replace(*_figure_of(node, range_name), version, series[node.pk])
        computed += len(due)
    return computed


def _live_ves(node):
    """{pk: (veid, hostname)} of the node's live VEs, in pk order (ties rank by it)."""
    from hosting.environments.models import VirtualEnvironment as VE
    return {pk: (veid, hostname) for pk, veid, hostname in VE.objects.filter(node=node)
            .live().order_by("pk").values_list("pk", "veid", "hostname")}


def _figure_of(node, range_name):
    """(days, name) the node's series of ``range_name`` is stored under (figures.py); a
    series of another TOP_VES is another figure, never a stand-in."""
    return FIGURE_DAYS[range_name], f"node-graph:{node.pk}:{TOP_VES}"


def _series_version(node, ves, since, resolution):
    """What a node's series of rollups depends on: the first period in the range, the
    newest VE rollup of that resolution (rollups are only ever added, at higher ids),
    the node's newest own rollup (each node's only ever come later), and its live VEs."""
    newest = UsageRollup.objects.filter(resolution=resolution).aggregate(top=Max("id"))["top"]
    own = NodeRollup.objects.filter(node=node, resolution=resolution).order_by("-time") \
        .values_list("time", flat=True).first()
    first = math.ceil(since.timestamp() / resolution)
    members = hashlib.sha1(",".join(map(str, ves)).encode()).hexdigest()[:20]
    return f"{first}:{newest}:{own and own.timestamp()}:{len(ves)}:{members}"


def _stored_series(node, ves, range_name, since, now):
    """The node's series as stored for the current data; else the one stored by the last
    rollup run (at most STAND_IN old: one run and its own time), trimmed to the range;
    else computed here (and stored).

    A stand-in is one rollup run behind, as the rollups themselves are: a VE made,
    destroyed or moved since shows as it was at that run, and between a 5-minute
    mark and the run that rolls that period up the ranking still counts the
    period that just left the range (its points are trimmed)."""
    resolution = RANGES[range_name][1]
    days, name = _figure_of(node, range_name)
    version = _series_version(node, ves, since, resolution)
    series = figures.load(days, name, version)
    if series is not None:
        return series
    standing = figures.newest(days, name, now, keep=STAND_IN)
    if standing is not None:
        return _trimmed(standing, since.timestamp())
    series = _node_series(node, ves, since, resolution)
    figures.replace(days, name, version, series)
    return series


def _trimmed(series, start):
    """``series`` without its points before ``start`` (epoch s)."""
    keep = [i for i, moment in enumerate(series["time"]) if moment >= start]
    if len(keep) == len(series["time"]):
        return series

    def cut(values):
        return [values[i] for i in keep]
    return {"time": cut(series["time"]),
            "ves": [dict(item, ram=cut(item["ram"]), cpu=cut(item["cpu"]))
                    for item in series["ves"]],
            "node": {"ram": cut(series["node"]["ram"]), "cpu": cut(series["node"]["cpu"])}}


def _node_graph(node, ves, range_name, series, since, now):
    """The API's answer from a node's ``series`` (``_node_series``): VEs named as they
    are now (a stand-in's VE that is gone keeps the name it had)."""
    shown = []
    for item in series["ves"]:
        veid, hostname = ves.get(item["pk"], (item["veid"], item["hostname"]))
        shown.append({"veid": veid, "hostname": hostname, "ram": item["ram"],
                      "cpu": item["cpu"]})
    return {"range": range_name, "resolution": RANGES[range_name][1] or 0,
            **_bounds(since, now), "time": series["time"], "ves": shown,
            "node": series["node"], "capacity": {"ram": node.ram_bytes, "cpus": node.cpus}}


def _node_series(node, ves, since, resolution):
    """{"time", "ves": [{pk, veid, hostname, ram, cpu}] (the others: pk None), "node"}
    of ``ves`` ({pk: (veid, hostname)}) from ``since``: the straightforward sums."""
    if resolution is not None:
        return _fleet_series({node: ves}, since, resolution)[node.pk]
    per_ve = _raw_of_node(list(ves), since)
    means = {pk: _mean([ram for ram, _ in series.values()]) for pk, series in per_ve.items()}
    top, rest = _ranked(ves, means)
    others = defaultdict(lambda: [0.0, 0.0])
    for pk in rest:
        for moment, (ram, cpu) in per_ve.get(pk, {}).items():
            others[moment][0] += ram or 0
            others[moment][1] += cpu or 0
    return _assembled(ves, top, rest, per_ve, others, _node_totals(node, since, None))


def _fleet_series(ves_of, since, resolution):
    """{node pk: ``_node_series``} of each node of ``ves_of`` ({node: its VEs}) from the
    rollups since ``since``, in three passes over them whatever the number of nodes:
    no index serves a node's 1,000 VEs, so each pass reads the range of the whole
    table, and housekeeping made them per node (10 nodes: 10x the time)."""
    every = [pk for ves in ves_of.values() for pk in ves]
    rows = UsageRollup.objects.filter(environment_id__in=every, resolution=resolution,
                                      time__gte=since)
    means = dict(rows.values("environment_id").annotate(mean=Avg("ram_avg"))
                 .values_list("environment_id", "mean"))
    ranked = {node.pk: _ranked(ves, means) for node, ves in ves_of.items()}
    per_ve = defaultdict(dict)  # the series of the VEs shown on their own
    for pk, moment, ram, cpu in rows.filter(
            environment_id__in=[pk for top, _ in ranked.values() for pk in top]).values_list(
            "environment_id", "time", "ram_avg", "cpu_avg"):
        per_ve[pk][moment.timestamp()] = (ram, cpu)
    zero, others = Value(0.0), defaultdict(dict)
    for node_id, moment, ram, cpu in rows.filter(
            environment_id__in=[pk for _, rest in ranked.values() for pk in rest]).values(
            "environment__node_id", "time").annotate(
            ram=Sum(Coalesce("ram_avg", zero)), cpu=Sum(Coalesce("cpu_avg", zero))) \
            .values_list("environment__node_id", "time", "ram", "cpu"):
        others[node_id][moment.timestamp()] = (ram, cpu)
    return {node.pk: _assembled(ves, *ranked[node.pk], per_ve, others[node.pk],
                                _node_totals(node, since, resolution))
            for node, ves in ves_of.items()}


def _ranked(ves, means):
    """(the TOP_VES VEs of ``ves`` by mean RAM, the rest), ties in pk order."""
    ranked = sorted(ves, key=lambda pk: -(means.get(pk) or 0))
    return ranked[:TOP_VES], ranked[TOP_VES:]


def _assembled(ves, top, rest, per_ve, others, own):
    """A node's series on one timeline: ``top``'s own, the ``rest`` summed (``others``:
    {epoch s: (RAM, CPU)}) and the node's ``own`` totals."""
    timeline = sorted(set(own).union(others, *(per_ve.get(pk, {}) for pk in top)))

    def column(values, index, missing=None):
        return [values.get(t, (missing, missing))[index] for t in timeline]

    shown = [{"pk": pk, "veid": ves[pk][0], "hostname": ves[pk][1],
              "ram": column(per_ve.get(pk, {}), 0), "cpu": column(per_ve.get(pk, {}), 1)}
             for pk in top]
    if rest:  # an hour none of them reported sums to 0, as the stack needs
        shown.append({"pk": None, "veid": None, "hostname": f"{len(rest)} others",
                      "ram": column(others, 0, 0), "cpu": column(others, 1, 0)})
    return {"time": timeline, "ves": shown,
            "node": {"ram": column(own, 0), "cpu": column(own, 1)}}


def _raw_of_node(env_ids, since):
    """{VE pk: {epoch s: (RAM, CPUs busy)}} from the raw samples since ``since``, in one
    query (from a few samples earlier, so the first point has a CPU rate too)."""
    rows = UsageSample.objects.filter(
        environment_id__in=env_ids,
        time__gte=since - timedelta(seconds=3 * settings.NODE_SAMPLE_SECONDS)).order_by(
        "environment_id", "time").values_list("environment_id", Cast("time", CharField()),
                                              "ram", "cpu_ns")
    # Bare tuples of the two metrics shown, the time as text parsed once per sample round
    # (a node's VEs share each round's time): building a datetime per row and
    # sampling.series over every metric took 1.5 s for an hour of 1,000 VEs
    # (bench/node_graph.py).
    out, moments, last = defaultdict(dict), {}, (None, None, None)
    for pk, text, ram, cpu_ns in rows:
        moment, stamp = moments.get(text) or moments.setdefault(text, _parsed(text))
        before_pk, before_time, before_ns = last
        last = (pk, moment, cpu_ns)
        if moment < since:
            continue
        cpu = None
        # As sampling.series's rate, in the same float steps (inline: 120,000 rows).
        if pk == before_pk and before_ns is not None and cpu_ns is not None \
                and cpu_ns >= before_ns:  # else not measured, or a reset
            seconds = (moment - before_time).total_seconds()
            cpu = (cpu_ns - before_ns) / 10**9 / seconds if seconds > 0 else None
        out[pk][stamp] = (ram, cpu)
    return out


def _parsed(text):
    """(datetime, epoch s) of a time as the database gives it as text (PostgreSQL with
    its UTC offset, SQLite without: stored in UTC)."""
    moment = parse_datetime(text)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt_timezone.utc)
    return moment, moment.timestamp()


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
