"""One row per console ticket: issued, then (once) opened, then closed; the audit trail.

What a row never holds: anything typed or shown. It keeps who, which VPS, from
where, when it was opened and closed, how long it lasted and why it ended. The
ticket itself is kept only as its SHA-256 (a copy of the database opens no
console); the relay key that seals the session's frames in Redis is wiped when
the session closes.
"""

import uuid

from django.conf import settings
from django.db import models


class ConsoleSessionQuerySet(models.QuerySet):
    def open(self):
        return self.filter(opened__isnull=False, closed__isnull=True)


class ConsoleSession(models.Model):
    class Reason(models.TextChoices):
        CLIENT = "client", "Closed by the user"
        IDLE = "idle", "Idle timeout"
        SUSPENDED = "suspended", "Account or VPS suspended"
        TERMINATED = "terminated", "VPS terminated"
        ENDED = "ended", "Console ended (the VPS stopped or rebooted)"
        REVOKED = "revoked", "Access ended (signed out, deactivated, role changed)"
        NODE = "node", "The node did not answer or the relay failed"
        REFUSED = "refused", "Ticket refused"
        LOST = "lost", "Lost (the web server relaying it stopped)"

    # Also the relay's session id: names the session's Redis lists and the node's task.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                             related_name="+")
    username = models.CharField(max_length=150, help_text="kept if the login goes")
    staff = models.BooleanField(default=False, help_text="opened by staff")
    environment = models.ForeignKey("environments.VirtualEnvironment", null=True,
                                    on_delete=models.SET_NULL, related_name="console_sessions")
    veid = models.PositiveIntegerField(help_text="kept if the VPS's row goes")
    node = models.CharField(max_length=63, help_text="the node that relays it")
    address = models.GenericIPAddressField(null=True, blank=True,
                                           help_text="the client's address (ticket request)")
    # The ticket: SHA-256 hex of the random ticket, one use, until ticket_expires; bound
    # to the Django session that asked for it (SHA-256 of its key) and the page's origin.
    ticket_digest = models.CharField(max_length=64, unique=True)
    ticket_expires = models.DateTimeField()
    session_digest = models.CharField(max_length=64)
    origin = models.CharField(max_length=300)
    issued = models.DateTimeField(auto_now_add=True, db_index=True)
    opened = models.DateTimeField(null=True, blank=True)
    closed = models.DateTimeField(null=True, blank=True)
    alive = models.DateTimeField(null=True, blank=True,
                                 help_text="the web side last said it relays it")
    duration = models.DurationField(null=True, blank=True, help_text="opened to closed")
    close_reason = models.CharField(max_length=16, choices=Reason.choices, blank=True)
    detail = models.CharField(max_length=200, blank=True, help_text="why, in words")
    # AES-256-GCM key of the session's frames in Redis (frames.py): made at opening, read
    # by the node from the database (Redis never sees it), wiped at closing.
    relay_key = models.BinaryField(null=True, blank=True, editable=False)
    relay_started = models.DateTimeField(null=True, blank=True,
                                         help_text="the node took the relay (once)")

    objects = ConsoleSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-issued"]
        indexes = [models.Index(fields=["closed", "opened"])]

    def __str__(self):
        return f"console of {self.veid} by {self.username} ({self.issued:%Y-%m-%d %H:%M})"

    @property
    def is_open(self):
        return self.opened is not None and self.closed is None
