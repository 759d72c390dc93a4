"""Cross-app models: the append-only audit log, API tokens, idempotency records."""

import hashlib
import hmac

from django.conf import settings
from django.db import models
from django_otp.models import Device, ThrottlingMixin



class AuditLogQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("the audit log is append-only")

    def delete(self):
        raise TypeError("the audit log is append-only")


class AuditLog(models.Model):
    """One staff or customer action, kept forever (rows are never changed or deleted)."""

    created = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                              related_name="+")
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return (f"{self.created:%Y-%m-%d %H:%M} {self.actor} {self.action} "
                f"{self.object_type} {self.object_id}")

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("the audit log is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("the audit log is append-only")


class ApiToken(models.Model):
    """An API key of a login, kept only as its SHA-256 digest (the key is shown once).

    ``prefix`` (the key's first characters) finds the candidates; the digest is
    compared in constant time. Keys are 40 random hex digits, like DRF's were.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=8, db_index=True)
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True,
                                   help_text="refused from this time on; empty: never")
    read_only = models.BooleanField(default=False,
                                    help_text="GET, HEAD and OPTIONS only")

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.user} {self.prefix}… {self.name}".strip()

    def expired(self, now=None):
        from django.utils import timezone
        return self.expires is not None and self.expires <= (now or timezone.now())


class IdempotencyRecord(models.Model):
    """What an ``Idempotency-Key`` was first used for: a keyed hash of the request
    (user, route, body), so the same key with another body is refused, not replayed."""

    key = models.CharField(max_length=100, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                             related_name="+")
    fingerprint = models.CharField(max_length=64)
    operation_id = models.UUIDField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)


class StaffRole(models.Model):
    """What a staff login may do (see roles.py): one role per staff member."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="staff_role")
    # the values of roles.Role (kept here too: roles.py imports this module lazily)
    role = models.CharField(max_length=16, choices=[
        ("administrator", "Administrator"), ("support", "Support"), ("billing", "Billing"),
        ("auditor", "Auditor (read-only)")])

    def __str__(self):
        return f"{self.user} {self.role}"


class LoginThrottle(models.Model):
    """Failed sign-ins of one account or one client address (see lockout.py): how many
    since the last cool-off, and until when sign-ins are refused."""

    ACCOUNT, ADDRESS = "account", "address"

    kind = models.CharField(max_length=8, choices=[(ACCOUNT, "account"), (ADDRESS, "address")])
    key = models.CharField(max_length=150)  # a user name (lower case) or an IP address
    failures = models.PositiveIntegerField(default=0)
    last_failure = models.DateTimeField(null=True, blank=True)
    lockouts = models.PositiveIntegerField(default=0)  # in a row: each doubles the cool-off
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "key"],
                                               name="one_throttle_per_account_or_address")]

    def __str__(self):
        return f"{self.kind} {self.key}: {self.failures} failures, until {self.locked_until}"


def recovery_digest(code):
    """The stored form of a recovery code (case, spaces and dashes do not matter)."""
    normal = "".join(str(code).lower().split()).replace("-", "")
    return hashlib.sha256(normal.encode()).hexdigest()


class RecoveryCodeDevice(ThrottlingMixin, Device):
    """A login's two-factor recovery codes, as a django-otp device (see twofactor.py).

    Each code works once; only its SHA-256 digest is kept (RecoveryCode)."""

    def get_throttle_factor(self):
        return 1

    def verify_token(self, token):
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        wanted = recovery_digest(token)
        found = None
        for code in self.codes.all():
            if hmac.compare_digest(code.digest, wanted):
                found = code
        if found is None:
            self.throttle_increment(commit=True)
            return False
        found.delete()
        self.throttle_reset(commit=False)
        self.save()
        return True


class RecoveryCode(models.Model):
    """One unused recovery code of a RecoveryCodeDevice, as the digest of the code."""

    device = models.ForeignKey(RecoveryCodeDevice, on_delete=models.CASCADE,
                               related_name="codes")
    digest = models.CharField(max_length=64)
