"""Backups of a VPS: taking one, restoring it (in place, into a new VPS, or some files),
and the rows that say which backups exist.

The node keeps the backups in its restic repository (``vectl backup``,
docs/storage.md); each backup operation's runner records what the node then
reports (``record``, ``keep_only``). A plan sells backups by how many it keeps
(``backups_daily`` days and ``backups_weekly`` weeks; 0 daily = none): one a day
is taken in its node's backup window (backup_schedule.py) and customers may take
more on demand, the node keeping only what the plan says. Rows outlive their VPS:
staff (and the customer) can restore a terminated VPS's backups into a new VPS
until BACKUP_KEEP_DAYS_AFTER_TERMINATION has passed.
"""

import re
from datetime import datetime, timedelta, timezone

from django.conf import settings
from django.db import transaction
from django.utils import timezone as django_time

from hosting.core.errors import Conflict, Forbidden, Invalid
from hosting.operations import services as operations
from hosting.operations.models import Operation
from ve import validate
from ve.errors import InvalidConfig

from .models import Backup

Kind = Operation.Kind
GiB = 1 << 30
ON_DEMAND_PER_DAY = 4  # a customer's own backups of one VPS in 24 hours


def repository_key(node_name, url):
    """Where a backup lives as the dashboard compares it: a restic URL (sftp:, s3:,
    rest:) is the same place for every node; a local path is that node's own."""
    return url if not url.startswith("/") else f"{node_name}:{url}"


def included(ve):
    """True if the VPS's plan sells backups."""
    return ve.plan.backups_daily > 0


def take(ve, user, idempotency_key=None):
    """Queue a backup of ``ve`` asked by ``user`` (customers: within their plan)."""
    if not user.is_staff:
        if not included(ve):
            raise Forbidden(f"plan {ve.plan.name} does not include backups")
        since = django_time.now() - timedelta(days=1)
        recent = ve.operations.filter(kind=Kind.BACKUP, requested_by=user,
                                      created__gte=since).count()
        if recent >= ON_DEMAND_PER_DAY:
            raise Conflict(f"{ON_DEMAND_PER_DAY} backups of VPS {ve.hostname} were asked "
                           "for in the last 24 hours; the next one is possible later")
    return operations.request(ve, Kind.BACKUP, user, params={"scheduled": False},
                              idempotency_key=idempotency_key)


def take_scheduled(ve):
    """Queue the daily backup of ``ve`` as the system (its node's window came); Conflict
    if the VPS is busy."""
    from hosting.operations import dispatch
    with transaction.atomic():
        op = operations.create(ve, Kind.BACKUP, None, {"scheduled": True})
        dispatch.on_commit(op)
    return op


def restore(ve, user, backup, idempotency_key=None):
    """Queue putting ``ve``'s whole disk back as ``backup`` (one of its own) holds it."""
    if backup.environment_id != ve.pk:
        raise Invalid(f"backup {backup.short_id} is not of VPS {ve.hostname}: restore it into "
                      "a new VPS instead", field="backup")
    _reachable(ve, backup)
    return operations.request(ve, Kind.RESTORE, user, params={"backup": backup.backup_id},
                              idempotency_key=idempotency_key)


def restore_files(ve, user, backup, path, into="/", idempotency_key=None):
    """Queue restoring ``path`` of ``backup`` (of any VPS of the same customer) into the
    running ``ve``, at its own place (``into`` "/") or under directory ``into``."""
    if backup.environment.owner_id != ve.owner_id:
        raise Invalid("that backup is not of a VPS of this VPS's owner", field="backup")
    _reachable(ve, backup)
    params = {"backup": backup.backup_id, "path": inside_path(path, "path"),
              "into": inside_path(into or "/", "into")}
    return operations.request(ve, Kind.RESTORE_FILES, user, params=params,
                              idempotency_key=idempotency_key)


def inside_path(path, field):
    """``path`` as a normalised absolute path inside a VPS (ve.validate.inside_path; Invalid
    on ``field`` otherwise)."""
    try:
        return validate.inside_path(path, where="the VPS")
    except InvalidConfig as exc:
        raise Invalid(exc.message, field=field) from None


def order_from(backup, user, plan, hostname, root_password="", ssh_key="",
               idempotency_key=None, node=None):
    """Queue a new VPS of ``plan`` for the backed-up VPS's owner, with ``backup``'s disk
    (its logins as backed up unless a password or key is given), on ``node`` if staff
    chose one; return the Operation."""
    from . import services
    source = backup.environment
    until = terminated_until(source)
    if until is not None and until < django_time.now():
        raise Conflict(f"backup {backup.short_id} expired with its terminated VPS")
    if backup.total_bytes > plan.disk_gib * GiB:
        raise Invalid(f"the backup holds {backup.total_bytes / GiB:.1f} GiB: plan {plan.name}'s "
                      f"{plan.disk_gib} GiB disk is too small", field="plan")
    return services.order(source.owner, plan, source.template, hostname, user, root_password,
                          ssh_key, idempotency_key=idempotency_key, backup=backup, node=node)


def _reachable(ve, backup):
    if not backup.shared and backup.node != ve.node.name:
        raise Conflict(f"backup {backup.short_id} is kept on the node the VPS was on when it "
                       "was taken; restore it into a new VPS (it is made there)")


def find(rows, text):
    """The one backup of ``rows`` whose id is or starts with ``text`` (8+ hex digits), or
    None (no such backup, or the prefix names several)."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", text or ""):
        return None
    found = list(rows.filter(backup_id__startswith=text)[:2])
    return found[0] if len(found) == 1 else None


def visible_to(user):
    """The backups ``user`` may see: all for staff, those of their VPSes for a customer."""
    rows = Backup.objects.select_related("environment")
    if user.is_staff:
        return rows
    return rows.filter(environment__owner__user=user)


def terminated_until(ve):
    """When the backups of terminated ``ve`` go (None while it is not terminated)."""
    ended = ve.operations.filter(kind=Kind.DESTROY, state=Operation.State.SUCCEEDED) \
        .values_list("finished", flat=True).first()
    if ve.actual_state != "destroyed" or ended is None:
        return None
    return ended + timedelta(days=settings.BACKUP_KEEP_DAYS_AFTER_TERMINATION)


def record(ve, done, node_name, repository, scheduled):
    """Add the row of the backup the node just took (``Engine.backup``'s answer)."""
    Backup.objects.update_or_create(backup_id=done["full_id"], defaults={
        "environment": ve, "created": datetime.fromtimestamp(done["time"], timezone.utc),
        "repository": repository, "node": node_name, "scheduled": scheduled,
        "added_bytes": done.get("data_added", 0), "total_bytes": done.get("total_bytes", 0)})


def keep_only(ve, repository, reported):
    """Drop ``ve``'s rows in ``repository`` that the node no longer reports (``reported``:
    the ids ``Engine.backups`` gives after the plan's retention ran)."""
    ve.backups.filter(repository=repository).exclude(backup_id__in=reported).delete()
