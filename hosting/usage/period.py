"""Hourly usage of live VEs over a period, aggregated by the database.

Reports and placement need per-VE percentiles, per-node hourly sums and a
few counts over up to a year of hourly rollups (a month of a 500-VE node is
360,000 rows). Figures are computed on first use and kept for the Period's life; since
hourly rollups change once an hour, each is also kept under the period's data
version in the cache and in the database (figures.py), where hourly
housekeeping stores the ones the reports offer (``store_current``) once new
rollups are in, so a page with an empty cache reads them instead of a month
of rollups.
"""

import math
from collections import defaultdict
from datetime import datetime, timedelta, timezone as tz
from functools import cached_property
from itertools import repeat
from operator import itemgetter

from django.core.cache import cache
from django.db.models import (CharField, Count, F, Max, OuterRef, Q, Subquery, Sum, Value,
                              Window)
from django.db.models.functions import Cast, Coalesce, RowNumber
from django.utils import timezone

from . import figures, sampling
from .models import UsageRollup


MIN_HOURS = 12  # a VE with less than half a day of history is not "measured"
CACHE_SECONDS = 3600
STAND_IN_SECONDS = 60
REPORT_DAYS = (1, 7, 30)  # the periods the overcommit page offers (30: placement's too)


class Period:
    """The hourly rollups of live VEs from ``days`` before ``now`` up to ``now``."""

    def __init__(self, days, now=None, stand_in=False):
        """``stand_in``: a page's reading, which may take the figures of slightly older
        data while housekeeping stores the current ones (``remember``); placement's
        measurement (capacity.py) reads exact figures only."""
        self.days = days
        self.now = now or timezone.now()
        self.since = self.now - timedelta(days=days)
        self.stand_in = stand_in

    @cached_property
    def _version(self):
        """What the figures depend on besides the period: the newest hourly rollup, and
        the VEs that may have hourly rollups (destroyed or deleted: theirs stop counting;
        moved to another node: their history counts there)."""
        hourly = UsageRollup.objects.filter(resolution=sampling.HOUR)
        newest = hourly.aggregate(top=Max("id"))
        ves = _rolled_up(hourly).aggregate(
            n=Count("id"), top=Max("id"), gone=Count("id", filter=Q(actual_state="destroyed")),
            placed=Sum(F("id") * F("node_id")))
        # Rollups start on the hour, so the rows in [since, now) change when ``since``
        # passes an hour: the first hour at or after it names them exactly.
        first_hour = math.ceil(self.since.timestamp() / 3600)
        return (f"{self.days}:{first_hour}:{newest['top']}:"
                f"{ves['n']}:{ves['top']}:{ves['gone']}:{ves['placed']}")

    def remember(self, name, compute):
        """``compute()``, or its result for this period and data version as cached, or
        else as stored in the database (figures.py); a computed one is kept in both."""
        # 2: idle's rows became tuples; a stand-in is cached only for readers taking one
        key = f"usage-period-2:{self._version}:{name}:{int(self.stand_in)}"
        value = cache.get(key)
        if value is not None:
            return value
        value = figures.load(self.days, name, self._version)
        if value is None:
            # Older data's figure stands in (briefly cached) while housekeeping stores
            # this version's: at most one rollup run behind, as the rollups themselves.
            value = figures.newest(self.days, name, self.now) if self.stand_in else None
            if value is not None:
                figures.ask_for(self._version)
                cache.set(key, value, STAND_IN_SECONDS)
                return value
            value = compute()
            figures.save(self.days, name, self._version, value)
        cache.set(key, value, CACHE_SECONDS)
        return value

    def store(self, name, compute):
        """Compute and store the figure ``name`` unless it is stored for the current
        data version; return whether it was computed."""
        if figures.has(self.days, name, self._version):
            return False
        figures.save(self.days, name, self._version, compute())
        return True

    def store_current(self):
        """Store this period's figures the reports read (``store``); return whether any
        was computed."""
        computed = [self.store(name, compute) for name, compute in (
            ("per-ve", self._measure_per_ve), ("all_totals", self._all_totals),
            ("last_disk", self._last_disk))]
        return any(computed)

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
        series, node_of, one_of = defaultdict(dict), {}, {}
        rows = self.rows().values_list("environment_id", "environment__node_id",
                                       Cast("time", CharField()), "ram_avg", "cpu_avg")
        for env_id, node_id, hour, ram, cpu in rows.iterator(chunk_size=10000):
            # One string per hour, not per row: a month of 10,000 VEs is 7.2 million rows.
            hour = one_of.setdefault(hour, hour)
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
            hours = list(set().union(*(series[pk] for pk in pks)))
            ram_columns, cpu_columns = [], []
            for pk in pks:  # one column per VE, its values in the order of ``hours``
                values = list(map(series[pk].get, hours,
                                  repeat((ram_p95[pk], cpu_p95[pk]), len(hours))))
                ram_columns.append(list(map(itemgetter(0), values)))
                cpu_columns.append(list(map(itemgetter(1), values)))
            # Each hour's sum over the VEs in the order of ``pks``, in C (a month of a
            # 1,000-VE node is 720,000 values a resource).
            filled[node_id] = list(zip(map(sum, zip(*ram_columns)),
                                       map(sum, zip(*cpu_columns))))
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
        return self.remember("all_totals", self._all_totals)

    def _all_totals(self):
        sums = self.rows().values("environment__node_id", "time").annotate(
            ram=Sum(Coalesce("ram_avg", Value(0.0))),
            cpu=Sum(Coalesce("cpu_avg", Value(0.0))), disk=Sum("disk_max"))
        out = {}
        for node_id, moment, ram, cpu, disk in sums.values_list(
                "environment__node_id", "time", "ram", "cpu", "disk"):
            out.setdefault(node_id, {})[moment.timestamp()] = (ram, cpu, disk)
        return out

    @cached_property
    def last_disk(self):
        """{VE pk: disk used in its last measured hour}."""
        return self.remember("last_disk", self._last_disk)

    def _last_disk(self):
        latest = self.rows().filter(disk_max__isnull=False).annotate(
            position=Window(RowNumber(), partition_by=[F("environment_id")],
                            order_by=F("time").desc()))
        return dict(latest.filter(position=1).values_list("environment_id", "disk_max"))

    def at(self, hours, env_ids):
        """{VE pk: {epoch hour: (RAM, CPUs)}} of ``env_ids`` in the given hours only."""
        moments = [datetime.fromtimestamp(h, tz.utc) for h in hours]
        out = defaultdict(dict)
        for env_id, moment, ram, cpu in self.rows(env_ids).filter(time__in=moments) \
                .values_list("environment_id", "time", "ram_avg", "cpu_avg"):
            out[env_id][moment.timestamp()] = (ram or 0.0, cpu or 0.0)
        return out


def _rolled_up(hourly):
    """The VEs that may have ``hourly`` rollups: all but those made since the newest
    rollup's hour began that have none. Every figure is of rollups, so such a VE (an order
    of this hour) is no new data, made or gone; its first rollup is."""
    from hosting.environments.models import VirtualEnvironment as VE
    newest_hour = hourly.order_by("-time").values("time")[:1]
    any_rollup = hourly.filter(environment=OuterRef("pk")).values("time")[:1]
    # One made before that hour counts unasked: asking each of 10,000 VEs for a rollup
    # costs an index probe each. One made since is asked, as a node clock lagging ours
    # may date its first samples (and so a rollup) before it was made: by a scalar
    # subquery, which the OR asks of those only, where PostgreSQL may answer an EXISTS
    # from a hash of every hourly rollup's VE.
    return VE.objects.alias(any_rollup=Subquery(any_rollup)).filter(
        Q(created__lt=Subquery(newest_hour)) | Q(any_rollup__isnull=False))
