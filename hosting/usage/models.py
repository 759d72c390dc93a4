"""What VEs use: monthly traffic (billing, quotas) and usage samples (graphs, reports)."""

from django.db import models

from .sampling import METRICS, NODE


class TrafficMonth(models.Model):
    """One VE's traffic in one calendar month (UTC), in its own rx/tx directions.

    ``last_rx_total``/``last_tx_total`` are the engine's cumulative counters at
    the last reading; each reading adds the difference.
    """

    environment = models.ForeignKey("environments.VirtualEnvironment", on_delete=models.CASCADE,
                                    related_name="traffic")
    month = models.DateField(help_text="first day of the month")
    rx_bytes = models.PositiveBigIntegerField(default=0)
    tx_bytes = models.PositiveBigIntegerField(default=0)
    extra_gib = models.PositiveIntegerField(default=0, help_text="granted by staff this month")
    last_rx_total = models.PositiveBigIntegerField(default=0)
    last_tx_total = models.PositiveBigIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-month"]
        constraints = [models.UniqueConstraint(fields=["environment", "month"],
                                               name="one_traffic_row_per_ve_and_month")]

    @property
    def total_bytes(self):
        return self.rx_bytes + self.tx_bytes


class UsageSample(models.Model):
    """One raw reading of one VE (kept a day): gauges and the engine's cumulative counters."""

    environment = models.ForeignKey("environments.VirtualEnvironment", on_delete=models.CASCADE,
                                    related_name="+")
    time = models.DateTimeField()
    ram = models.BigIntegerField(null=True, help_text="the working set: in use, apart from "
                                                      "inactive file cache")
    ram_cache = models.BigIntegerField(null=True, help_text="inactive file cache (reclaimable)")
    swap = models.BigIntegerField(null=True)
    processes = models.IntegerField(null=True)
    disk = models.BigIntegerField(null=True)
    inodes = models.BigIntegerField(null=True)
    cpu_ns = models.BigIntegerField(null=True)
    rx_bytes = models.BigIntegerField(null=True)
    tx_bytes = models.BigIntegerField(null=True)
    rx_packets = models.BigIntegerField(null=True)
    tx_packets = models.BigIntegerField(null=True)
    io_read_bytes = models.BigIntegerField(null=True)
    io_write_bytes = models.BigIntegerField(null=True)
    memory_failcnt = models.BigIntegerField(null=True)
    oom_kills = models.BigIntegerField(null=True)
    # Routed VEs with a connection cap only (else null): entries held in the node's
    # conntrack table, and new connections the cap refused since it was set on the node.
    conntrack = models.IntegerField(null=True)
    conntrack_refused = models.BigIntegerField(null=True)

    class Meta:
        indexes = [models.Index(fields=["environment", "time"]),
                   models.Index(fields=["time"])]  # pruning


class Rollup(models.Model):
    """A period of raw samples summarised: avg, max and p95 per metric (see sampling.py).

    The metric columns (``<metric>_avg``/``_max``/``_p95``) are added to each
    concrete rollup by ``_add_stats``, from sampling's metric lists, so those
    lists live in one place.
    """

    resolution = models.PositiveIntegerField(help_text="seconds: 300 or 3600")
    time = models.DateTimeField(help_text="start of the period")
    samples = models.PositiveIntegerField()

    class Meta:
        abstract = True


def _add_stats(model, metrics):
    for metric in metrics:
        for stat in ("avg", "max", "p95"):
            model.add_to_class(f"{metric}_{stat}", models.FloatField(null=True))


class UsageRollup(Rollup):
    """A VE's usage over 5 minutes or an hour, with its limit hits, OOM kills and refused
    connections summed."""

    environment = models.ForeignKey("environments.VirtualEnvironment", on_delete=models.CASCADE,
                                    related_name="+")
    limit_hits = models.BigIntegerField(default=0)
    oom_kills = models.BigIntegerField(default=0)
    conntrack_refused = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["environment", "resolution", "time"],
                                               name="one_rollup_per_ve_period")]
        indexes = [models.Index(fields=["resolution", "time"]),  # pruning, reports
                   # The newest hourly rollup, part of a period's data version (period.py):
                   # without it the database walks back over every 5-minute rollup made since.
                   models.Index(fields=["resolution", "id"], name="usage_rollup_newest")]


_add_stats(UsageRollup, METRICS)


class NodeSample(models.Model):
    """One raw reading of a node's own totals (kept a day)."""

    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="+")
    time = models.DateTimeField()
    cpu_busy_ns = models.BigIntegerField()
    cpus = models.PositiveIntegerField()
    ram_used = models.BigIntegerField()
    ram_total = models.BigIntegerField()
    swap_used = models.BigIntegerField()
    disk_used = models.BigIntegerField()
    disk_total = models.BigIntegerField()
    load1 = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["node", "time"]), models.Index(fields=["time"])]


class NodeRollup(Rollup):
    """A node's own totals over 5 minutes or an hour (sampling.NODE metrics)."""

    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["node", "resolution", "time"],
                                               name="one_rollup_per_node_period")]
        indexes = [models.Index(fields=["resolution", "time"])]


_add_stats(NodeRollup, NODE.metrics)


class NodeLoad(models.Model):
    """A node's measured load, as the placement rule uses it (see capacity.py)."""

    node = models.OneToOneField("nodes.Node", on_delete=models.CASCADE, related_name="+")
    computed_at = models.DateTimeField()
    days = models.PositiveSmallIntegerField()
    ram_p95 = models.FloatField(help_text="bytes: p95 of the hourly sum of its measured VEs")
    cpu_p95 = models.FloatField(help_text="CPUs busy, likewise")
    measured = models.JSONField(default=list, help_text="the VEs (pks) in those sums")


class PlanLoad(models.Model):
    """A plan's observed use as a share of what it sells (see capacity.py)."""

    plan = models.OneToOneField("plans.Plan", on_delete=models.CASCADE, related_name="+")
    computed_at = models.DateTimeField()
    days = models.PositiveSmallIntegerField()
    ram_share = models.FloatField(null=True)
    cpu_share = models.FloatField(null=True)
    measured = models.PositiveIntegerField(help_text="VEs it was measured on")


class PeriodFigure(models.Model):
    """One figure of a usage Period (period.py) as computed for one data version, so a
    page reads what hourly housekeeping computed instead of a month of rollups.

    ``value`` is figures.py's encoding; a row is read for its exact ``version``
    (period, newest hourly rollup, VEs), or stands in for at most a rollup run while
    housekeeping stores the current one (figures.py).
    """

    days = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=40)
    version = models.CharField(max_length=200)
    computed_at = models.DateTimeField(help_text="when it was stored (old ones are pruned)")
    value = models.TextField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["days", "name", "version"],
                                               name="one_period_figure_per_version")]
        indexes = [models.Index(fields=["computed_at"], name="usage_figure_computed_at")]
