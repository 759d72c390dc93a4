"""What VEs use: monthly traffic (for billing and quotas)."""

from django.db import models


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
