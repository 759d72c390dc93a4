"""Storing a node's samples, rolling them up and pruning them (see sampling.py)."""

import logging
from collections import namedtuple
from datetime import datetime, timezone as tz

from django.db import connection, transaction
from django.utils import timezone

from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes.models import Node

from . import sampling
from .models import NodeRollup, NodeSample, UsageRollup, UsageSample

log = logging.getLogger(__name__)
GRACE_SECONDS = 60  # a period is rolled up once its last sample has surely arrived

# engine sample field -> UsageSample field
_RAW = {"ram_bytes": "ram", "ram_cache_bytes": "ram_cache", "swap_bytes": "swap",
        "processes": "processes", "disk_used": "disk", "inodes_used": "inodes", "cpu_ns": "cpu_ns",
        "rx_bytes": "rx_bytes", "tx_bytes": "tx_bytes", "rx_packets": "rx_packets",
        "tx_packets": "tx_packets", "io_read_bytes": "io_read_bytes",
        "io_write_bytes": "io_write_bytes", "memory_failcnt": "memory_failcnt",
        "oom_kills": "oom_kills", "conntrack": "conntrack",
        "conntrack_refused": "conntrack_refused"}
RAW_FIELDS = ("time",) + tuple(_RAW.values())  # what rollups and graphs read of a sample
NODE_RAW_FIELDS = ("time", "cpu_busy_ns", "ram_used", "swap_used", "disk_used", "load1")

# What rolls up: raw rows of ``raw`` per ``owner`` (a foreign key column) into ``rollup``.
Source = namedtuple("Source", "raw rollup owner fields kind")
VES = Source(UsageSample, UsageRollup, "environment_id", RAW_FIELDS, sampling.VE)
NODES = Source(NodeSample, NodeRollup, "node_id", NODE_RAW_FIELDS, sampling.NODE)


def store(node_name, sample):
    """Save one ``Engine.sample()`` of node ``node_name``; return the VE rows written.

    VEs the dashboard does not know (or is still creating) are left out.
    """
    moment = datetime.fromtimestamp(sample["time"], tz.utc)
    node = Node.objects.get(name=node_name)
    known = dict(VE.objects.filter(node=node).live().exclude(actual_state=VE.State.CREATING)
                 .values_list("veid", "pk"))
    rows = [UsageSample(environment_id=known[ve["veid"]], time=moment,
                        **{field: ve.get(key) for key, field in _RAW.items()})
            for ve in sample["ves"] if ve["veid"] in known]
    totals = sample["node"]
    with transaction.atomic():
        UsageSample.objects.bulk_create(rows)
        NodeSample.objects.create(
            node=node, time=moment, cpu_busy_ns=totals["cpu_busy_ns"], cpus=totals["cpus"],
            ram_used=totals["ram_used"], ram_total=totals["ram_total"],
            swap_used=totals["swap_used"], disk_used=totals["disk_used"],
            disk_total=totals["disk_total"], load1=totals["load1"])
    return len(rows)


def roll_up(now=None):
    """Roll every complete 5-minute and hourly period of raw samples (of VEs and of
    nodes) up; return rows made."""
    now = now or timezone.now()
    made = 0
    for source in (VES, NODES):
        # A list first: no read cursor stays open while rows are written (SQLite).
        owners = list(source.raw.objects.values_list(source.owner, flat=True).distinct())
        for owner in owners:
            for resolution in (sampling.FIVE_MINUTES, sampling.HOUR):
                try:
                    made += _roll_up_one(source, owner, resolution, now)
                except Exception:  # one VE's trouble (a busy database) must not stop the rest
                    log.exception("usage of %s %s not rolled up", source.owner, owner)
    return made


def _roll_up_one(source, owner, resolution, now):
    mine = {source.owner: owner}
    done = (source.rollup.objects.filter(resolution=resolution, **mine)
            .order_by("-time").values_list("time", flat=True).first())
    raw = source.raw.objects.filter(**mine).order_by("time")
    if done is not None:
        raw = raw.filter(time__gte=done)  # the period rolled up last gives "previous"
    samples = list(raw.values(*source.fields))
    # A period is complete once a later sample arrived (node clocks may lag ours)
    # and the grace time has passed.
    latest = samples[-1]["time"].timestamp() if samples else 0
    cutoff = min(now.timestamp() - GRACE_SECONDS, latest)
    buckets, previous = {}, None
    for sample in samples:
        start = sampling.bucket_start(sample["time"], resolution)
        if done is not None and start <= done:
            previous = sample
            continue
        if start.timestamp() + resolution > cutoff:
            break
        buckets.setdefault(start, {"previous": previous, "samples": []})["samples"].append(
            sample)
        previous = sample
    rows = []
    for start, bucket in buckets.items():
        values = sampling.series(bucket["samples"], bucket["previous"], source.kind)
        row = source.rollup(resolution=resolution, time=start, samples=len(bucket["samples"]),
                            **mine)
        for event in source.kind.events:
            setattr(row, event, sum(v for v in values[event] if v))
        for metric in source.kind.metrics:
            avg, top, p95 = sampling.summarize(values[metric])
            setattr(row, f"{metric}_avg", avg)
            setattr(row, f"{metric}_max", top)
            setattr(row, f"{metric}_p95", p95)
        rows.append(row)
    source.rollup.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def prune(now=None):
    """Delete what is past its retention (sampling.py); return rows deleted per kind."""
    now = now or timezone.now()
    deleted = {"raw": UsageSample.objects.filter(time__lt=now - sampling.RAW_KEEP).delete()[0]
               + NodeSample.objects.filter(time__lt=now - sampling.RAW_KEEP).delete()[0]}
    for resolution, keep in sampling.KEEP.items():
        deleted[resolution] = sum(
            rollup.objects.filter(resolution=resolution, time__lt=now - keep).delete()[0]
            for rollup in (UsageRollup, NodeRollup))
    return deleted


def analyze():
    """Refresh SQLite's query planner statistics. Without them it reads the usage
    tables through the time index row by row, several times slower than through
    each VE's rows; PostgreSQL's autovacuum keeps its own statistics."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            # In full (about 0.1 s per 500,000 rows): statistics sampled with
            # analysis_limit led the planner to slower plans (bench/reports.py).
            cursor.execute("ANALYZE")
