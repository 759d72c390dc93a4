"""IP pools assigned to nodes, and the addresses handed to VEs."""

import ipaddress

from django.core.exceptions import ValidationError
from django.db import models


class IPPool(models.Model):
    """A network whose range [first, last] is handed out to VEs on its nodes."""

    name = models.CharField(max_length=100, unique=True)
    network = models.CharField(max_length=64, help_text="e.g. 198.18.0.0/24 or fd00::/64")
    gateway = models.GenericIPAddressField(null=True, blank=True)
    first = models.GenericIPAddressField()
    last = models.GenericIPAddressField()
    nameservers = models.CharField(max_length=200, blank=True,
                                   help_text="DNS servers for VEs with addresses from here, "
                                             "separated by spaces")
    nodes = models.ManyToManyField("nodes.Node", related_name="ip_pools", blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.network})"

    @property
    def version(self):
        return ipaddress.ip_network(self.network, strict=False).version

    def clean(self):
        try:
            net = ipaddress.ip_network(self.network, strict=True)
        except ValueError as exc:
            raise ValidationError({"network": str(exc)}) from exc
        for field in ("first", "last", "gateway"):
            value = getattr(self, field)
            if value and ipaddress.ip_address(value) not in net:
                raise ValidationError({field: f"{value} is outside {net}"})
        if ipaddress.ip_address(self.first) > ipaddress.ip_address(self.last):
            raise ValidationError({"last": "the range ends before it starts"})
        for server in self.nameservers.split():
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ValidationError({"nameservers": f"{server} is not an IP address"}) from None


class IPAddress(models.Model):
    """One address of a pool; ``environment`` is set while a VE holds it."""

    pool = models.ForeignKey(IPPool, on_delete=models.CASCADE, related_name="addresses")
    address = models.GenericIPAddressField(unique=True)
    environment = models.ForeignKey("environments.VirtualEnvironment", null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="addresses")

    class Meta:
        ordering = ["pool", "id"]

    def __str__(self):
        return self.address
