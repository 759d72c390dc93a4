"""Plans: what a VPS offer includes and costs."""

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from . import seccomp


def _io_weight(value):
    if 0 < value < 10 or value > 1000:
        raise ValidationError("use 10 to 1000, or 0 for the node's default")


class Plan(models.Model):
    """A sellable VPS size. Retired plans (active=False) keep their VEs but take no orders."""

    name = models.CharField(max_length=100, unique=True)
    # Bounds are the engine's own (ve/config.py): a plan the nodes would refuse is refused here.
    ram_mb = models.PositiveIntegerField(validators=[MinValueValidator(16)],
                                         help_text="RAM limit in MiB (at least 16)")
    swap_mb = models.PositiveIntegerField(default=0, help_text="swap in MiB")
    cpu_units = models.PositiveIntegerField(
        default=1000, validators=[MinValueValidator(8), MaxValueValidator(500000)],
        help_text="relative CPU weight, 1000 = normal")
    cpu_limit_pct = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(102400)],
                                                help_text="% of one CPU, 0 = none")
    cpus = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(1024)],
                                       help_text="CPUs, 0 = all")
    processes = models.PositiveIntegerField(
        default=256, validators=[MinValueValidator(16), MaxValueValidator(4194304)])
    disk_gib = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(65536)],
        help_text="disk space in GiB (grows live; a smaller disk applies at the next stop)")
    inodes = models.PositiveIntegerField(
        default=200000, validators=[MinValueValidator(1024), MaxValueValidator(2**32 - 1)],
        help_text="files and directories the disk holds")
    io_weight = models.PositiveIntegerField(
        default=0, validators=[_io_weight],
        help_text="relative disk I/O weight 10-1000, 0 = the node's default")
    disk_read_mbps = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(100000)],
        help_text="disk read cap in MiB/s, 0 = none")
    disk_write_mbps = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(100000)],
        help_text="disk write cap in MiB/s, 0 = none")
    disk_read_iops = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(10**7)],
        help_text="disk read operations per second, 0 = none")
    disk_write_iops = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(10**7)],
        help_text="disk write operations per second, 0 = none")
    connections = models.PositiveIntegerField(
        default=16384, validators=[MaxValueValidator(1 << 24)],
        help_text="tracked connections the VE may hold on its node, each way (the node's "
                  "conntrack table is shared by all VEs), 0 = no cap")
    interfaces = models.PositiveIntegerField(
        default=128, validators=[MaxValueValidator(65536)],
        help_text="network interfaces the VE may have, its loopback and eth0 included "
                  "(bridges and veths cost the node kernel memory), 0 = no cap")
    seccomp_allow = models.CharField(max_length=200, blank=True, default="",
                                     validators=[seccomp.validate], help_text=seccomp.HELP)
    hibernation = models.BooleanField(
        default=False, help_text="customers may hibernate their VPS: its memory is saved to "
                                 "disk and it stops using RAM and CPU; Start resumes it where "
                                 "it was")
    snapshots = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(100)],
        help_text="disk snapshots a VPS may keep (its customer takes and rolls back to "
                  "them), 0 = none")
    snapshot_gib = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(65536)],
        help_text="space a VPS's snapshots may hold of their own (what changed since), in "
                  "GiB; 0 = up to its disk size")
    backups_daily = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(366)],
        help_text="daily backups kept (one is taken each day in its node's backup window; "
                  "its customer may also take one on demand), 0 = no backups")
    backups_weekly = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(520)],
        help_text="weekly backups kept beyond the daily ones (the last of each week)")
    bandwidth_gib = models.PositiveIntegerField(default=1000, help_text="per month, 0 = unmetered")
    port_speed_mbit = models.PositiveIntegerField(
        default=100, validators=[MinValueValidator(1), MaxValueValidator(30000)],
        help_text="Mbit/s each way")
    ipv4_count = models.PositiveIntegerField(default=1)
    ipv6_count = models.PositiveIntegerField(default=1)
    monthly_price = models.DecimalField(max_digits=10, decimal_places=2,
                                        validators=[MinValueValidator(0)])
    class OverQuota(models.TextChoices):
        THROTTLE = "throttle", "Throttle to the reduced speed"
        SUSPEND = "suspend", "Suspend"

    over_quota = models.CharField(max_length=16, choices=OverQuota.choices,
                                  default=OverQuota.THROTTLE,
                                  help_text="what happens when the monthly traffic is used up")
    throttled_speed_mbit = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(30000)],
        help_text="Mbit/s each way while over quota")
    templates = models.ManyToManyField(
        "environments.OSTemplate", blank=True, related_name="plans",
        help_text="OS templates this plan offers (none = all active)")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["monthly_price", "name"]

    def __str__(self):
        return self.name

    def clean(self):
        """What the engine would refuse is refused here: at most one inode per 4 KiB."""
        from ve.config import INODE_BYTES
        try:
            self.seccomp_allow = seccomp.normalize(self.seccomp_allow)
        except ValidationError as exc:
            raise ValidationError({"seccomp_allow": exc.messages}) from None
        if self.disk_gib and self.inodes and self.inodes > (self.disk_gib << 30) // INODE_BYTES:
            raise ValidationError({"inodes": f"at most {(self.disk_gib << 30) // INODE_BYTES} "
                                             f"for {self.disk_gib} GiB (one per 4 KiB)"})

    def offered_templates(self):
        """The active OS templates a customer may pick for this plan."""
        from hosting.environments.models import OSTemplate
        chosen = self.templates.filter(active=True) if self.pk else OSTemplate.objects.none()
        return chosen if chosen.exists() else OSTemplate.objects.filter(active=True)

    def engine_limits(self, throttled=False):
        """Return the plan's limits as the engine's option names (strings, like vectl's).

        ``throttled``: the VE used up its monthly traffic and gets the reduced speed.
        """
        rate = self.throttled_speed_mbit if throttled else self.port_speed_mbit
        return {"ram": f"{self.ram_mb}M", "swap": f"{self.swap_mb}M",
                "cpuunits": str(self.cpu_units), "cpulimit": str(self.cpu_limit_pct),
                "cpus": str(self.cpus), "numproc": str(self.processes), "rate": str(rate),
                "diskspace": f"{self.disk_gib}G", "diskinodes": str(self.inodes),
                "ioweight": str(self.io_weight), "readbps": f"{self.disk_read_mbps}M",
                "writebps": f"{self.disk_write_mbps}M", "readiops": str(self.disk_read_iops),
                "writeiops": str(self.disk_write_iops), "numconn": str(self.connections),
                "numnetif": str(self.interfaces)}

    def engine_settings(self):
        """What an edit of the plan must bring to its VEs' nodes: the limits and the
        seccomp relaxation (a VEConfig field, not a limit; applied at the next start)."""
        return {**self.engine_limits(), "seccomp_allow": self.seccomp_allow}
