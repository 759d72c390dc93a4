"""The VPS lifecycle actions of the API, from one table.

Each row says what ``POST /api/v1/environments/<veid>/<name>/`` does: the
Operation kind it queues, who may ask, the body it takes, whether the
account password is needed again and whether an Idempotency-Key is honoured.
``install(viewset)`` makes one DRF action per row, with its schema (summary,
description, request, responses) written from the row.
"""

from dataclasses import dataclass
from typing import Callable

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from hosting.core import idempotency
from hosting.core.api import IDEMPOTENCY_KEY
from hosting.core.errors import Forbidden
from hosting.nodes import moves
from hosting.operations import services as operations
from hosting.operations.api import OperationSerializer
from hosting.operations.models import Operation

from . import backups, services, snapshots
from .models import OSTemplate

Kind = Operation.Kind


OTP_HELP = "customers with two-factor sign-in: a current code (or a recovery code)"


class ReinstallSerializer(serializers.Serializer):
    template = serializers.SlugRelatedField(
        slug_field="name", queryset=OSTemplate.objects.all(), required=False,
        help_text="OS template name (see /api/v1/templates/); default: the VPS's own")
    root_password = serializers.CharField(required=False, allow_blank=True, write_only=True)
    ssh_key = serializers.CharField(required=False, allow_blank=True)
    keep_old = serializers.BooleanField(required=False, default=False,
                                        help_text="keep the old files in /old-root")
    current_password = serializers.CharField(required=False, write_only=True,
                                             help_text="customers: their login password")
    otp_code = serializers.CharField(required=False, write_only=True, allow_blank=True,
                                     max_length=20, help_text=OTP_HELP)


class TerminateSerializer(serializers.Serializer):
    current_password = serializers.CharField(required=False, write_only=True,
                                             help_text="customers: their login password")
    otp_code = serializers.CharField(required=False, write_only=True, allow_blank=True,
                                     max_length=20, help_text=OTP_HELP)


class PasswordSerializer(serializers.Serializer):
    root_password = serializers.CharField(write_only=True)
    current_password = serializers.CharField(required=False, write_only=True,
                                             help_text="customers: their login password")
    otp_code = serializers.CharField(required=False, write_only=True, allow_blank=True,
                                     max_length=20, help_text=OTP_HELP)


class MigrateSerializer(serializers.Serializer):
    node = serializers.CharField(required=False, allow_blank=True, max_length=63,
                                 help_text="the node to move to; blank or absent: the best "
                                           "node by the placement rule")
    offline = serializers.BooleanField(required=False, default=False,
                                       help_text="stop, copy and start instead of a live move "
                                                 "(a VPS that cannot move live moves offline "
                                                 "anyway, said so in the operation)")


class TakeSnapshotSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=40,
                                 help_text="letters, digits, '.', '_' and '-' (default: the "
                                           "time, UTC)")


class SnapshotNameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=40, help_text="the snapshot's name")
    current_password = serializers.CharField(required=False, write_only=True,
                                             help_text="rollback, customers: their login "
                                                       "password")
    otp_code = serializers.CharField(required=False, write_only=True, allow_blank=True,
                                     max_length=20, help_text=OTP_HELP)


class RestoreSerializer(serializers.Serializer):
    backup = serializers.RegexField(r"^[0-9a-f]{8,64}$", help_text="the backup's id (or its "
                                                                     "first 8+ characters)")
    current_password = serializers.CharField(required=False, write_only=True,
                                             help_text="customers: their login password")
    otp_code = serializers.CharField(required=False, write_only=True, allow_blank=True,
                                     max_length=20, help_text=OTP_HELP)


class RestoreFilesSerializer(serializers.Serializer):
    backup = serializers.RegexField(r"^[0-9a-f]{8,64}$", help_text="the backup's id (of this "
                                    "or another VPS of the same customer)")
    path = serializers.CharField(max_length=4096, help_text="file or folder, e.g. /etc/nginx")
    into = serializers.CharField(required=False, default="/", max_length=4096,
                                 help_text='"/" (default): back at its own place, '
                                           "overwriting; else under this folder")


def _backup_row(ve, user, text):
    from hosting.core.errors import Invalid
    found = backups.find(backups.visible_to(user), text)
    if found is None:
        raise Invalid(f"no backup {text}", field="backup")
    return found


def _queue(kind):
    def run(ve, user, data, key):
        return operations.request(ve, kind, user, idempotency_key=key)
    return run


def _reinstall(ve, user, data, key):
    return services.reinstall(ve, user, data.get("template"), data.get("root_password", ""),
                              data.get("ssh_key", ""), data.get("keep_old", False),
                              idempotency_key=key)


def _migrate(ve, user, data, key):
    return moves.request(ve, user, data.get("node") or None, data.get("offline", False),
                         idempotency_key=key)


def _snapshot(ve, user, data, key):
    return snapshots.take(ve, user, data.get("name", ""), idempotency_key=key)


def _rollback(ve, user, data, key):
    return snapshots.rollback(ve, user, data["name"], idempotency_key=key)


def _delete_snapshot(ve, user, data, key):
    return snapshots.delete(ve, user, data["name"], idempotency_key=key)


def _backup(ve, user, data, key):
    return backups.take(ve, user, idempotency_key=key)


def _restore(ve, user, data, key):
    return backups.restore(ve, user, _backup_row(ve, user, data["backup"]),
                           idempotency_key=key)


def _restore_files(ve, user, data, key):
    return backups.restore_files(ve, user, _backup_row(ve, user, data["backup"]),
                                 data["path"], data.get("into") or "/", idempotency_key=key)


def _password(ve, user, data, key):
    return services.reset_password(ve, user, data["root_password"], idempotency_key=key)


@dataclass(frozen=True)
class Lifecycle:
    name: str                 # the URL's last part
    kind: str                 # the Operation kind queued
    summary: str
    run: Callable             # (ve, user, validated body, idempotency key) -> Operation
    staff_only: bool = False  # else the VPS's owner (while active) or staff
    body: type | None = None  # request serializer, if the action takes a body
    reauthenticate: bool = False  # customers give their login password again

    def description(self):
        who = ("Staff only." if self.staff_only
               else "The VPS's owner (not while suspended) or staff.")
        parts = [f"{self.summary} Queues a '{self.kind}' operation: answers 202 with it; "
                 f"poll /api/v1/operations/<id>/.", who]
        if self.reauthenticate:
            parts.append("Customers send their login password as current_password and, with "
                         "two-factor sign-in, a current code as otp_code (403 if either is "
                         "wrong; staff need not).")
        parts.append("Honours Idempotency-Key.")
        return " ".join(parts)


LIFECYCLE = (
    Lifecycle("start", Kind.START, "Start the VPS.", _queue(Kind.START)),
    Lifecycle("stop", Kind.STOP, "Stop the VPS.", _queue(Kind.STOP)),
    Lifecycle("reboot", Kind.RESTART, "Reboot the VPS.", _queue(Kind.RESTART)),
    Lifecycle("terminate", Kind.DESTROY, "Terminate the VPS: its files go and its addresses "
              "return to the pool (DELETE on the VPS does the same, with the same body).",
              _queue(Kind.DESTROY), body=TerminateSerializer, reauthenticate=True),
    Lifecycle("hibernate", Kind.HIBERNATE, "Hibernate the VPS: its memory is saved to disk "
              "and it stops; start resumes it with its processes where they were. Customers "
              "whose plan includes hibernation, and staff.", _queue(Kind.HIBERNATE)),
    Lifecycle("suspend", Kind.SUSPEND, "Suspend the VPS (stopped; its owner cannot start it).",
              _queue(Kind.SUSPEND), staff_only=True),
    Lifecycle("resume", Kind.RESUME, "Resume a suspended VPS.", _queue(Kind.RESUME),
              staff_only=True),
    Lifecycle("reinstall", Kind.REINSTALL, "Wipe the VPS and install its (or another) OS "
              "template.", _reinstall, body=ReinstallSerializer, reauthenticate=True),
    Lifecycle("migrate", Kind.MIGRATE, "Move the VPS to another node: live (its processes "
              "and connections go along, a moment without service) unless offline is asked "
              "or it cannot; its addresses stay. Administrators only.", _migrate,
              staff_only=True, body=MigrateSerializer),
    Lifecycle("snapshot", Kind.SNAPSHOT, "Take a snapshot of the VPS's disk (it is frozen "
              "for a moment). As many as its plan keeps, within their space (GET snapshots/ "
              "tells both); staff are not held to them.", _snapshot, body=TakeSnapshotSerializer),
    Lifecycle("rollback", Kind.ROLLBACK, "Put the VPS's disk back as snapshot ``name`` left "
              "it (the snapshot stays); a running VPS reboots. Not while hibernated.",
              _rollback, body=SnapshotNameSerializer, reauthenticate=True),
    Lifecycle("delete-snapshot", Kind.SNAPSHOT_DELETE, "Delete snapshot ``name`` of the "
              "VPS.", _delete_snapshot, body=SnapshotNameSerializer),
    Lifecycle("backup", Kind.BACKUP, "Back up the VPS now (from a snapshot, so it keeps "
              "running); its plan's retention then applies. Customers whose plan includes "
              "backups, a few a day; staff.", _backup),
    Lifecycle("restore-backup", Kind.RESTORE, "Put the whole disk of the VPS back as backup "
              "``backup`` (one of its own) holds it: what changed since is lost; a running "
              "VPS reboots.", _restore, body=RestoreSerializer, reauthenticate=True),
    Lifecycle("restore-files", Kind.RESTORE_FILES, "Restore a file or folder of a backup "
              "into the running VPS, at its own place or under folder ``into``.",
              _restore_files, body=RestoreFilesSerializer),
    Lifecycle("password", Kind.PASSWORD, "Set the VPS's root password (sent to the node as a "
              "hash only).", _password, body=PasswordSerializer, reauthenticate=True),
)
BY_NAME = {row.name: row for row in LIFECYCLE}


def perform(view, row):
    """Do ``row`` on the view's VPS for the view's request; the 202 answer."""
    request = view.request
    data = {}
    if row.body is not None:
        body = row.body(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
    ve = view.get_object()  # a VPS the caller may not see is a 404, whoever asks
    if row.staff_only and not request.user.is_staff:
        raise Forbidden("only staff can do this")
    if row.reauthenticate and not request.user.is_staff:
        services.reauthenticate(request.user, data.get("current_password"),
                                data.get("otp_code"))
    op = idempotency.run(request, lambda key: row.run(ve, request.user, data, key))
    return Response(OperationSerializer(op, context={"request": request}).data,
                    status=status.HTTP_202_ACCEPTED)


def schema(row, method="post"):
    """The extend_schema of ``row`` (also used by DELETE, which is 'terminate')."""
    return extend_schema(summary=row.summary, description=row.description(),
                         request=row.body, responses={202: OperationSerializer},
                         parameters=[IDEMPOTENCY_KEY])


def _make_action(row):
    def act(self, request, veid=None):
        return perform(self, row)
    act.__name__ = act.__qualname__ = row.name
    act.__doc__ = row.description()
    return schema(row)(action(detail=True, methods=["post"], url_path=row.name)(act))


def install(viewset):
    """Class decorator: one POST action on ``viewset`` per row of LIFECYCLE."""
    for row in LIFECYCLE:
        setattr(viewset, row.name, _make_action(row))
    return viewset
