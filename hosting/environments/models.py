"""OS templates and the VEs (VPSes) customers rent."""

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower

from hosting.core import scoping
from hosting.core.errors import Conflict
from hosting.plans import seccomp

from .validators import validate_hostname, validate_template_name, validate_veid


class OSTemplate(models.Model):
    """An OS template the provider offers; retired ones stay for existing VEs."""

    name = models.CharField(max_length=64, unique=True,
                            validators=[validate_template_name])
    title = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    share_files = models.BooleanField(
        "share files", default=False,
        help_text="new VPSes of this template share one read-only copy of its files on "
                  "their node (and its memory): more VPSes fit in the same RAM; each "
                  "VPS's disk holds only its own files.")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.title or self.name

    def rename_refusal(self):
        """Why this template's name may not change now ("" if it may): the nodes keep
        the template's files under its name, so once a VE was made from it every later
        order or reinstall would look for a name no node has."""
        if self.pk is None:
            return ""
        old = OSTemplate.objects.filter(pk=self.pk).values_list("name", flat=True).first()
        if old is None or old == self.name:
            return ""
        if VirtualEnvironment.objects.filter(template_id=self.pk).exists():
            return (f"template {old} cannot be renamed: VPSes were made from it and the "
                    "nodes know it by that name (add a new template instead)")
        return ""

    def delete_refusal(self):
        """Why this template may not be deleted ("" if it may)."""
        if self.pk and VirtualEnvironment.objects.filter(template_id=self.pk).exists():
            return (f"template {self.name} is in use by VPSes; retire it (active: false) "
                    "instead")
        return ""

    def clean(self):
        why = self.rename_refusal()
        if why:  # forms (the admin's too) show it at the field
            raise ValidationError({"name": why})

    def save(self, *args, **kwargs):
        why = self.rename_refusal()
        if why:  # every other path (API, shell, code) is refused as well
            raise Conflict(why, field="name")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        why = self.delete_refusal()
        if why:
            raise Conflict(why)
        return super().delete(*args, **kwargs)


class VEQuerySet(models.QuerySet):
    def for_user(self, user):
        """The VEs ``user`` may see: all for staff, their own for a customer."""
        return scoping.for_user(self, user, "owner__user")

    def live(self):
        return self.exclude(actual_state="destroyed")

    def named(self, hostname):
        """The VEs called ``hostname``, in any case. Compared as LOWER(hostname) =
        LOWER(...) like the unique index of live host names (Meta), so PostgreSQL
        answers ``.named(...).live()`` from that index (``hostname__iexact`` is
        UPPER(...) = UPPER(...) there, which no index serves)."""
        return self.alias(hostname_lower=Lower("hostname")).filter(
            hostname_lower=Lower(models.Value(hostname, output_field=models.CharField())))


class VirtualEnvironment(models.Model):
    """One VPS: desired state lives here, actual state is reported by its node."""

    class State(models.TextChoices):
        CREATING = "creating", "Creating"
        STOPPED = "stopped", "Stopped"
        RUNNING = "running", "Running"
        SUSPENDED = "suspended", "Suspended"
        HIBERNATED = "hibernated", "Hibernated"
        DESTROYED = "destroyed", "Destroyed"
        UNKNOWN = "unknown", "Unknown"

    veid = models.PositiveIntegerField(
        unique=True, validators=[validate_veid])
    owner = models.ForeignKey("customers.Customer", on_delete=models.PROTECT,
                              related_name="environments")
    plan = models.ForeignKey("plans.Plan", on_delete=models.PROTECT, related_name="environments")
    node = models.ForeignKey("nodes.Node", on_delete=models.PROTECT, related_name="environments")
    template = models.ForeignKey(OSTemplate, on_delete=models.PROTECT, related_name="+")
    hostname = models.CharField(max_length=253,
                                validators=[validate_hostname])
    desired_state = models.CharField(max_length=16, choices=State.choices,
                                     default=State.RUNNING)
    actual_state = models.CharField(max_length=16, choices=State.choices,
                                    default=State.CREATING)
    created = models.DateTimeField(auto_now_add=True)
    # Traffic quota (hosting/usage/traffic.py): a VE over its month's quota is
    # throttled or suspended, as its plan says, until the next month or until
    # staff grant extra traffic that covers it.
    throttled = models.BooleanField(default=False)
    suspended_for_traffic = models.BooleanField(default=False)
    # Automatic restarts of a VE that should run but stopped unexpectedly
    # (hosting/operations/restarts.py): how many within the current window,
    # the last one, and whether it kept dying and was left stopped for staff.
    restarts = models.PositiveSmallIntegerField(default=0)
    last_restart = models.DateTimeField(null=True, blank=True)
    crash_loop = models.BooleanField(default=False)
    # Staff's override of the plan's seccomp relaxation (hosting/plans/seccomp.py):
    # null follows the plan, "" is the full filter. Customers never see it.
    seccomp_allow = models.CharField(max_length=200, null=True, blank=True, default=None,
                                     validators=[seccomp.validate])
    # What its backups hold in their repository (compressed, shared pieces once), as
    # measured after its last backup; kept after termination while its backups are.
    backup_bytes = models.BigIntegerField(default=0)
    # Made on its template's shared layer (ve/storage/layers.py): fixed when it is
    # made, whatever its template's setting later (its disk is laid out so).
    shared_template = models.BooleanField(default=False, editable=False)

    objects = VEQuerySet.as_manager()

    class Meta:
        ordering = ["veid"]
        constraints = [models.UniqueConstraint(
            Lower("hostname"), condition=~models.Q(actual_state="destroyed"),
            name="unique_hostname_of_live_ves")]
        # A node's page, its count on the nodes API and placement read a node's VEs
        # by state; the staff VPS list filters by state (node_id alone has its own).
        indexes = [models.Index(fields=["node", "actual_state"], name="ve_node_state"),
                   models.Index(fields=["actual_state"], name="ve_actual_state")]

    def __str__(self):
        return f"{self.veid} ({self.hostname})"

    def engine_limits(self):
        """The engine limits this VE should have now (its plan's, throttled or not)."""
        return self.plan.engine_limits(throttled=self.throttled)

    def engine_seccomp_allow(self):
        """The seccomp relaxation this VE should have: its override, else its plan's."""
        return self.plan.seccomp_allow if self.seccomp_allow is None else self.seccomp_allow

    def engine_ips(self):
        """Its addresses, IPv4 first, as the engine's config lists them."""
        addresses = [a.address for a in self.addresses.all()]
        return tuple(sorted(addresses, key=lambda a: (":" in a, a)))


class Snapshot(models.Model):
    """A disk snapshot of a VPS, as its node last reported it (hosting/environments/
    snapshots.py): the node holds the data, this row what the pages and limits need."""

    environment = models.ForeignKey(VirtualEnvironment, on_delete=models.CASCADE,
                                    related_name="snapshots")
    name = models.CharField(max_length=40)
    created = models.DateTimeField()
    # "reflink" (shares blocks with the disk) or "copy" (a full copy: the node's storage
    # cannot share them)
    method = models.CharField(max_length=16)
    own_bytes = models.BigIntegerField(default=0, help_text="space it holds that the disk "
                                                            "and other snapshots do not share")

    class Meta:
        ordering = ["created", "name"]
        constraints = [models.UniqueConstraint(fields=["environment", "name"],
                                               name="one_snapshot_name_per_ve")]

    def __str__(self):
        return f"{self.environment} @ {self.name}"


class Backup(models.Model):
    """A backup of a VPS in a node's restic repository, as the node reported it
    (hosting/environments/backups.py). Rows outlive the VPS: a terminated VPS's
    backups stay for BACKUP_KEEP_DAYS_AFTER_TERMINATION, restorable into a new one."""

    environment = models.ForeignKey(VirtualEnvironment, on_delete=models.CASCADE,
                                    related_name="backups")
    backup_id = models.CharField(max_length=64, unique=True, help_text="restic's snapshot id")
    created = models.DateTimeField()
    # Where the backup lives: a restic URL shared by nodes, or "<node>:<path>" for a
    # node's own directory (only that node can restore it).
    repository = models.CharField(max_length=300)
    node = models.CharField(max_length=63, help_text="the node that took it")
    scheduled = models.BooleanField(default=False, help_text="taken in the backup window")
    added_bytes = models.BigIntegerField(default=0, help_text="new data it stored")
    total_bytes = models.BigIntegerField(default=0, help_text="size of the files it holds")

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.environment} backup {self.short_id}"

    @property
    def short_id(self):
        return self.backup_id[:8]

    @property
    def shared(self):
        """True if every node may reach its repository (a URL, not a node's directory)."""
        return not self.repository.split(":", 1)[-1].startswith("/")


class BackupFetch(models.Model):
    """A look into a backup asked by the web side and answered by the backup's node:
    a directory's entries or one file's bytes (``backup_browse.py``). Kept minutes."""

    class What(models.TextChoices):
        LIST = "list", "List a directory"
        FILE = "file", "Read a file"

    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="+")
    what = models.CharField(max_length=8, choices=What.choices)
    path = models.CharField(max_length=4096)
    requested = models.DateTimeField(auto_now_add=True)
    done = models.BooleanField(default=False)
    entries = models.JSONField(default=list, blank=True)
    content = models.BinaryField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
