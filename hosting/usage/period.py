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
from django.db.models import Count, F, Max, Sum, Value, Window
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from . import sampling
from .models import UsageRollup


MIN_HOURS = 12  # a VE with less than half a day of history is not "measured"
CACHE_SECONDS = 3600


class Period:
    """The last ``days`` (up to ``now``) of hourly rollups of live VEs."""

    def __init__(self, days, now=None):
        self.days = days
        self.now = now or timezone.now()
        self.since = self.now - timedelta(days=days)

    @cached_property
    def _version(self):
        """What the figures depend on besides the period: the newest hourly rollup and
        the VEs destroyed (their rollups stop counting)."""
        from hosting.environments.models import VirtualEnvironment as VE
        newest = UsageRollup.objects.filter(resolution=sampling.HOUR).aggregate(
            top=Max("id"), rows=Count("id"))
        gone = VE.objects.filter(actual_state="destroyed").aggregate(n=Count("id"), top=Max("id"))
        return (f"{self.days}:{int(self.since.timestamp()) // 3600}:{newest['top']}:"
                f"{newest['rows']}:{gone['n']}:{gone['top']}")

    def remember(self, name, compute):
        """``compute()``, or its cached result for this period and data version."""
        key = f"usage-period:{self._version}:{name}"
        value = cache.get(key)
        if value is None:
            value = compute()
            cache.set(key, value, CACHE_SECONDS)
        return value

    def rows(self, env_ids=None):
        rows = UsageRollup.objects.filter(resolution=sampling.HOUR, time__gte=self.since) \
            .exclude(environment__actual_state="destroyed")
        return rows if env_ids is None else rows.filter(environment_id__in=list(env_ids))

    @cached_property
    def hours(self):
        """{VE pk: hours it was measured}."""
        return self.remember("hours", lambda: dict(
            self.rows().values("environment_id").annotate(n=Count("id"))
            .values_list("environment_id", "n")))

    @cached_property
    def measured(self):
        """The VEs (pks) with at least MIN_HOURS of history in the period."""
        return frozenset(pk for pk, hours in self.hours.items() if hours >= MIN_HOURS)

    @cached_property
    def ram_p95(self):
        """{VE pk: p95 of its hourly RAM averages (nearest rank)}."""
        return self._p95s[0]

    @cached_property
    def cpu_p95(self):
        """{VE pk: p95 of its hourly CPU averages}."""
        return self._p95s[1]

    @cached_property
    def _p95s(self):
        return self.remember("p95s", lambda: self.percentiles(("ram_avg", "cpu_avg"), 95))

    def rank(self, field, percent, env_ids=None):
        """{VE pk: nearest-rank ``percent`` percentile of ``field`` (missing = 0)}."""
        return self.percentiles((field,), percent, env_ids)[0]

    def percentiles(self, fields, percent, env_ids=None):
        """[{VE pk: nearest-rank ``percent`` percentile of the field}, one per field].

        Percentiles are taken in Python from the bare values: measured on a month
        of 500 VEs, streaming the floats beats sorting each VE's rows by a window
        function on SQLite (1.75x) and about equals it on PostgreSQL
        (bench/reports.py)."""
        values = defaultdict(lambda: tuple([] for _ in fields))
        rows = self.rows(env_ids).values_list("environment_id", *fields)
        for env_id, *figures in rows.iterator(chunk_size=10000):
            lists = values[env_id]
            for index, figure in enumerate(figures):
                lists[index].append(figure or 0.0)
        return [{pk: sampling.percentile(lists[index], percent) for pk, lists in values.items()}
                for index in range(len(fields))]

    def totals(self, env_ids=None):
        """{node pk: {epoch hour: (RAM, CPUs, disk)}}: sums over its VEs (all with data,
        or ``env_ids``) of their hourly averages (disk: maxima)."""
        sums = self.rows(env_ids).values("environment__node_id", "time").annotate(
            ram=Sum(Coalesce("ram_avg", Value(0.0))), cpu=Sum(Coalesce("cpu_avg", Value(0.0))),
            disk=Sum("disk_max"))
        out = {}
        for node_id, moment, ram, cpu, disk in sums.values_list(
                "environment__node_id", "time", "ram", "cpu", "disk"):
            out.setdefault(node_id, {})[moment.timestamp()] = (ram, cpu, disk)
        return out

    @cached_property
    def all_totals(self):
        """totals() over every live VE with data."""
        return self.remember("all_totals", self.totals)

    @cached_property
    def measured_totals(self):
        """totals() over the measured VEs only."""
        return self.remember("measured_totals", lambda: self.totals(self.measured))

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
