"""Hourly usage of live VEs over a period, aggregated by the database.

Reports and placement need per-VE percentiles, per-node hourly sums and a
few counts over up to a year of hourly rollups (a month of a 500-VE node is
360,000 rows). Each figure here is one query that returns one row per VE or
per node-hour; the rollup rows themselves never travel to Python. Figures
are computed on first use, kept for the Period's life and, since hourly
rollups change once an hour, in the cache until a new one arrives.
"""

from collections import defaultdict
from datetime import datetime, timedelta, timezone as tz
from functools import cached_property

from django.core.cache import cache
from django.db.models import CharField, Count, F, Max, Q, Sum, Value, Window
from django.db.models.functions import Cast, Coalesce, RowNumber
from django.utils import timezone

from . import sampling
from .models import UsageRollup


MIN_HOURS = 12  # a VE with less than half a day of history is not "measured"
CACHE_SECONDS = 3600


class Period:
    """The hourly rollups of live VEs from ``days`` before ``now`` up to ``now``."""

    def __init__(self, days, now=None):
        self.days = days
        self.now = now or timezone.now()
        self.since = self.now - timedelta(days=days)

    @cached_property
    def _version(self):
        """What the figures depend on besides the period: the newest hourly rollup, and
        the VEs (made, destroyed or deleted: their rollups count or stop counting; moved
        to another node: their history counts there)."""
        from hosting.environments.models import VirtualEnvironment as VE
        newest = UsageRollup.objects.filter(resolution=sampling.HOUR).aggregate(top=Max("id"))
        ves = VE.objects.aggregate(n=Count("id"), top=Max("id"),
                                   gone=Count("id", filter=Q(actual_state="destroyed")),
                                   placed=Sum(F("id") * F("node_id")))
        return (f"{self.days}:{int(self.since.timestamp()) // 3600}:{newest['top']}:"
                f"{ves['n']}:{ves['top']}:{ves['gone']}:{ves['placed']}")

    def remember(self, name, compute):
        """``compute()``, or its cached result for this period and data version."""
        key = f"usage-period:{self._version}:{name}"
        value = cache.get(key)
        if value is None:
            value = compute()
            cache.set(key, value, CACHE_SECONDS)
        return value

    def rows(self, env_ids=None):
        rows = UsageRollup.objects.filter(resolution=sampling.HOUR, time__gte=self.since,
                                          time__lt=self.now) \
            .exclude(environment__actual_state="destroyed")
        return rows if env_ids is None else rows.filter(environment_id__in=list(env_ids))

    @cached_property
    def _per_ve(self):
        """Hours, p95s, medians and the filled node sums placement reads, from one pass."""
        return self.remember("per-ve", self._measure_per_ve)

    def _measure_per_ve(self):
        # One stream of bare values; the hour as text is only a key (no datetimes built).
        series, node_of = defaultdict(dict), {}
        rows = self.rows().values_list("environment_id", "environment__node_id",
                                       Cast("time", CharField()), "ram_avg", "cpu_avg")
        for env_id, node_id, hour, ram, cpu in rows.iterator(chunk_size=10000):
            series[env_id][hour] = (ram or 0.0, cpu or 0.0)
            node_of[env_id] = node_id
        # Percentiles are taken here from the bare values: measured on a month of 500
        # VEs, streaming the floats beats sorting each VE's rows by a window function
        # on SQLite (1.7x) and trails it by 17% on PostgreSQL (bench/reports.py).
        ram = {pk: [v[0] for v in hours.values()] for pk, hours in series.items()}
        cpu = {pk: [v[1] for v in hours.values()] for pk, hours in series.items()}
        ram_p95 = {pk: sampling.p95(values) for pk, values in ram.items()}
        cpu_p95 = {pk: sampling.p95(values) for pk, values in cpu.items()}
        medians = ({pk: sampling.median(values) for pk, values in ram.items()},
                   {pk: sampling.median(values) for pk, values in cpu.items()})
        measured = [pk for pk, hours in series.items() if len(hours) >= MIN_HOURS]
        by_node = defaultdict(list)
        for pk in measured:
            by_node[node_of[pk]].append(pk)
        filled = {}
        for node_id, pks in by_node.items():
            # A VE younger than the period counts at its own p95 in the hours before
            # it had figures, so a new one weighs on its node from its first day.
            hours = set().union(*(series[pk] for pk in pks))
            filled[node_id] = [
                (sum(series[pk].get(hour, (ram_p95[pk], 0))[0] for pk in pks),
                 sum(series[pk].get(hour, (0, cpu_p95[pk]))[1] for pk in pks))
                for hour in hours]
        return {"hours": {pk: len(hours) for pk, hours in series.items()},
                "ram_p95": ram_p95, "cpu_p95": cpu_p95, "medians": medians, "filled": filled}

    @cached_property
    def hours(self):
        """{VE pk: hours it was measured}."""
        return self._per_ve["hours"]

    @cached_property
    def measured(self):
        """The VEs (pks) with at least MIN_HOURS of history in the period."""
        return frozenset(pk for pk, hours in self.hours.items() if hours >= MIN_HOURS)

    @cached_property
    def ram_p95(self):
        """{VE pk: p95 of its hourly RAM averages (nearest rank)}."""
        return self._per_ve["ram_p95"]

    @cached_property
    def cpu_p95(self):
        """{VE pk: p95 of its hourly CPU averages}."""
        return self._per_ve["cpu_p95"]

    @cached_property
    def measured_totals(self):
        """{node pk: [(RAM, CPUs) per hour]}: the hourly sums over its measured VEs, each
        VE's own p95 standing in for the hours before its first figures."""
        return self._per_ve["filled"]

    @cached_property
    def medians(self):
        """({VE pk: median hourly RAM}, {VE pk: median hourly CPU}) (sampling.median)."""
        return self._per_ve["medians"]

    @cached_property
    def all_totals(self):
        """{node pk: {epoch hour: (RAM, CPUs, disk)}}: sums over each node's VEs of their
        hourly averages (disk: maxima)."""
        def compute():
            sums = self.rows().values("environment__node_id", "time").annotate(
                ram=Sum(Coalesce("ram_avg", Value(0.0))),
                cpu=Sum(Coalesce("cpu_avg", Value(0.0))), disk=Sum("disk_max"))
            out = {}
            for node_id, moment, ram, cpu, disk in sums.values_list(
                    "environment__node_id", "time", "ram", "cpu", "disk"):
                out.setdefault(node_id, {})[moment.timestamp()] = (ram, cpu, disk)
            return out
        return self.remember("all_totals", compute)

    @cached_property
    def last_disk(self):
        """{VE pk: disk used in its last measured hour}."""
        def compute():
            latest = self.rows().filter(disk_max__isnull=False).annotate(
                position=Window(RowNumber(), partition_by=[F("environment_id")],
                                order_by=F("time").desc()))
            return dict(latest.filter(position=1).values_list("environment_id", "disk_max"))
        return self.remember("last_disk", compute)

    def at(self, hours, env_ids):
        """{VE pk: {epoch hour: (RAM, CPUs)}} of ``env_ids`` in the given hours only."""
        moments = [datetime.fromtimestamp(h, tz.utc) for h in hours]
        out = defaultdict(dict)
        for env_id, moment, ram, cpu in self.rows(env_ids).filter(time__in=moments) \
                .values_list("environment_id", "time", "ram_avg", "cpu_avg"):
            out[env_id][moment.timestamp()] = (ram or 0.0, cpu or 0.0)
        return out
