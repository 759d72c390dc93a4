"""Nodes: the hardware servers whose root workers run the VEs."""

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

node_name = RegexValidator(r"^[a-z0-9][a-z0-9-]{0,62}$",
                           "use lower-case letters, digits and '-' (it names a Celery queue)")


def _ratio(default):
    return models.DecimalField(max_digits=5, decimal_places=2, default=Decimal(default),
                               validators=[MinValueValidator(Decimal("0.1"))])


class Node(models.Model):
    """A hardware node. Its state comes from its worker's heartbeat."""

    class State(models.TextChoices):
        ONLINE = "online", "Online"
        DRAINING = "draining", "Draining"
        OFFLINE = "offline", "Offline"

    name = models.CharField(max_length=63, unique=True, validators=[node_name])
    state = models.CharField(max_length=16, choices=State.choices, default=State.OFFLINE)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    ram_bytes = models.PositiveBigIntegerField(default=0)
    cpus = models.PositiveIntegerField(default=0)
    disk_bytes = models.PositiveBigIntegerField(default=0)
    disk_free_bytes = models.PositiveBigIntegerField(default=0, help_text="free where VEs live")
    cgroup_version = models.PositiveSmallIntegerField(null=True, blank=True)
    boot_id = models.CharField(max_length=64, blank=True,
                               help_text="the node's boot its worker last started in (a "
                                         "new one means the node rebooted)")
    warnings = models.JSONField(default=list, blank=True)
    drift = models.JSONField(default=list, blank=True,
                             help_text="differences between the dashboard and the node, "
                                       "from the last reconcile")
    unmanaged_veids = models.JSONField(default=list, blank=True,
                                       help_text="VEIDs on the node the dashboard did not make "
                                                 "(never given to new VEs)")
    # Its migration identity, reported by its chores worker (hosting/nodes/peers.py):
    # the address of its migration sshd, the key it pushes VEs with, that sshd's host
    # key, and the OS templates installed there (a VE moves only to a node that has its).
    migrate_address = models.CharField(max_length=300, blank=True,
                                       help_text="host:port of its migration sshd")
    migrate_key = models.CharField(max_length=200, blank=True)
    migrate_host_key = models.CharField(max_length=200, blank=True)
    templates = models.JSONField(default=list, blank=True)
    # An evacuation under way or done (hosting/nodes/evacuation.py): started, by (user
    # id), parallel, stuck ({veid: why it cannot move}), finished. Empty: none.
    evacuation = models.JSONField(default=dict, blank=True)
    # Scheduled backups (hosting/environments/backup_schedule.py): taken in this window
    # (UTC hours; 24 = any time), this many at once, each uploading at most this fast.
    backup_window_start = models.PositiveSmallIntegerField(
        default=1, validators=[MaxValueValidator(23)],
        help_text="hour (UTC) its window for scheduled backups opens")
    backup_window_hours = models.PositiveSmallIntegerField(
        default=6, validators=[MinValueValidator(1), MaxValueValidator(24)],
        help_text="how long the window stays open (24: any time)")
    backup_parallel = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(16)],
        help_text="backups it runs at once")
    backup_limit_kib = models.PositiveIntegerField(
        default=0, help_text="upload bandwidth of each backup, KiB/s (0 = no cap)")
    backup_checked = models.DateTimeField(null=True, blank=True,
                                          help_text="its backup repository's last check")
    backup_check_error = models.TextField(blank=True, help_text="what that check found "
                                                                "wrong (blank: sound)")
    ram_overcommit = _ratio("1.5")
    swap_overcommit = _ratio("1.0")
    cpu_overcommit = _ratio("4.0")
    disk_overcommit = _ratio("1.0")
    risk_pct = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(10), MaxValueValidator(100)],
        help_text="the p95 of the node's total RAM and CPU use may reach this % of physical "
                  "(drives the reports' headroom and fits)")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def queue(self):
        """The Celery queue of this node's lifecycle operations (its root ops worker's)."""
        return f"node.{self.name}"

    @property
    def chores_queue(self):
        """The Celery queue of this node's background work (sampling, traffic,
        reconcile), consumed by a worker of its own so operations never wait behind it."""
        return f"node.{self.name}.chores"

    @property
    def console_queue(self):
        """The Celery queue of its VPSes' web consoles (hosting/consoles/relay.py), taken
        by a threads-pool worker of its own: a console runs for hours, never in the
        operations' or chores' few slots."""
        return f"node.{self.name}.console"


class Rebalance(models.Model):
    """Moves staff applied from the rebalancing plan (hosting/nodes/rebalance.py), now or
    in a maintenance window: run a few at a time by housekeeping's beat."""

    requested_by = models.ForeignKey("auth.User", null=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    run_at = models.DateTimeField(help_text="when the moves begin (the window's start)")
    parallel = models.PositiveSmallIntegerField(default=2)
    # [{veid, hostname, from, to, ram, cpu}]: planned again when it begins, from the
    # figures of that moment, if it was scheduled for later.
    moves = models.JSONField(default=list, blank=True)
    stuck = models.JSONField(default=dict, blank=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    cancelled = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created"]

    @property
    def state(self):
        if self.cancelled:
            return "cancelled"
        if self.finished:
            return "done"
        return "running" if self.started else "scheduled"
