"""Operations: the only way anything changes on a node."""

import uuid

from django.conf import settings
from django.db import models

from hosting.core import scoping


class OperationQuerySet(models.QuerySet):
    def for_user(self, user):
        """The operations ``user`` may see: all for staff, those on their VEs for a customer."""
        return scoping.for_user(self, user, "environment__owner__user")


class Operation(models.Model):
    """One engine action on a VE, queued for its node's root worker.

    Kinds use the engine's verbs; at most one unfinished operation per VE.
    """

    class Kind(models.TextChoices):
        CREATE = "create", "Create"
        START = "start", "Start"
        STOP = "stop", "Stop"
        RESTART = "restart", "Reboot"
        REINSTALL = "reinstall", "Reinstall"
        PASSWORD = "password", "Reset root password"
        SET = "set", "Change limits"
        PLAN = "plan", "Change plan"
        SUSPEND = "suspend", "Suspend"
        RESUME = "resume", "Resume"
        DESTROY = "destroy", "Terminate"
        MIGRATE = "migrate", "Move to another host"
        HIBERNATE = "hibernate", "Hibernate"
        SNAPSHOT = "snapshot", "Take a snapshot"
        ROLLBACK = "rollback", "Roll back to a snapshot"
        SNAPSHOT_DELETE = "snapshot_delete", "Delete a snapshot"
        BACKUP = "backup", "Back up"
        RESTORE = "restore", "Restore a backup"
        RESTORE_FILES = "restore_files", "Restore files from a backup"
        # Records of what happened on the node by itself (never queued): a
        # power-off from inside the VPS, or an unexpected stop.
        POWEROFF = "poweroff", "Power off"
        CRASH = "crash", "Unexpected stop"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    UNFINISHED = (State.QUEUED, State.RUNNING)

    # What ``error_code`` may say (documented in the API schema).
    ERROR_CODES = {
        "invalid": "the node refused the values (a limit it cannot take, say)",
        "not_found": "the VE or its OS template is missing on the node",
        "exists": "the VEID is taken on the node with other settings",
        "foreign_ve": "the VEID is taken on the node by a VE the dashboard does not manage",
        "wrong_state": "the VE cannot do this in its state on the node",
        "needs_stop": "the change needs the VE stopped",
        "resource": "the node could not provide something (cgroup, mount, disk)",
        "unsupported": "the node lacks a kernel feature this needs",
        "disk_too_small": "the VE's data does not fit the new plan's disk",
        "engine_error": "another engine error",
        "interrupted": "its worker was interrupted too often",
        "start_failed": "the VE rebooted from inside but did not start again",
        "migration_failed": "the move to another node failed; the VE is where it was",
        "internal_error": "a bug: the node worker crashed running it",
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    environment = models.ForeignKey("environments.VirtualEnvironment", null=True,
                                    on_delete=models.SET_NULL, related_name="operations")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    # Inputs of the runner. A password travels only as its crypt(3) hash and is
    # wiped from here when the operation finishes.
    params = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    # Why it failed, as a short stable string (API clients branch on this, never on
    # ``error``'s text); blank while unfinished or succeeded. See ERROR_CODES.
    error_code = models.CharField(max_length=32, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True,
                                     on_delete=models.SET_NULL, related_name="+")
    idempotency_key = models.CharField(max_length=100, null=True, blank=True, unique=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [models.UniqueConstraint(
            fields=["environment"], condition=models.Q(state__in=["queued", "running"]),
            name="one_unfinished_operation_per_ve")]
        # The lists are newest first: a VPS's history (its page, the API's
        # environment__veid filter) and the operations of a state or kind (a billing
        # client polling state=failed or kind=migrate, the staff page's filter) read
        # these in order and stop at a page; without them a rare state or kind means
        # reading the whole table backwards by ``created``.
        indexes = [
            models.Index(fields=["environment", "-created"], name="operation_ve_newest"),
            models.Index(fields=["state", "-created"], name="operation_state_newest"),
            models.Index(fields=["kind", "-created"], name="operation_kind_newest"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.environment} ({self.state})"

    def requester_shown_to(self, viewer):
        """Who asked, as ``viewer`` may see it: customers see staff only as "support"."""
        user = self.requested_by
        if user is None:
            return "the VPS itself" if self.params.get("origin") == "inside" else "system"
        if user.is_staff and not viewer.is_staff:
            return "support"
        return user.username

    def error_shown_to(self, viewer):
        """The error as ``viewer`` may read it: a failed move names nodes and their
        addresses, which are staff's business; its owner reads what it means to them."""
        if self.error and self.kind == self.Kind.MIGRATE and not viewer.is_staff:
            return "the move to another host did not happen; the VPS stays where it was"
        if self.error and self.kind == self.Kind.CREATE and self.params.get("to") \
                and self.error_code == "migration_failed" and not viewer.is_staff:
            return ("the restored VPS could not be moved to the host it was made for; "
                    "try again or ask support")
        return self.error

    @property
    def is_finished(self):
        return self.state not in self.UNFINISHED

    # What a VPS is doing while an unfinished operation of these kinds runs on it.
    _PASSING = {Kind.CREATE: "Creating", Kind.START: "Starting", Kind.STOP: "Stopping",
                Kind.RESTART: "Rebooting", Kind.REINSTALL: "Reinstalling",
                Kind.SUSPEND: "Suspending", Kind.RESUME: "Resuming", Kind.DESTROY: "Terminating",
                Kind.MIGRATE: "Moving", Kind.HIBERNATE: "Hibernating",
                Kind.ROLLBACK: "Rolling back", Kind.BACKUP: "Backing up",
                Kind.RESTORE: "Restoring"}

    @property
    def passing_state(self):
        """"Rebooting" and the like while it runs on its VPS, else None."""
        return None if self.is_finished else self._PASSING.get(self.kind)
