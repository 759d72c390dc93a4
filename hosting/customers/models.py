"""Customers: the people and companies who rent VPSes."""

from django.conf import settings
from django.db import models


class Customer(models.Model):
    """A customer account, tied to one login; suspended customers can act on nothing."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                related_name="customer")
    company = models.CharField(max_length=200, blank=True)
    contact_name = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user__username"]

    def __str__(self):
        return self.company or self.user.get_username()

    @property
    def is_active(self):
        return self.status == self.Status.ACTIVE
