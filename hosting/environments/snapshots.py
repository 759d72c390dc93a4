"""Disk snapshots of a VPS: asking for one, rolling back, deleting, and the plan's limits.

The node holds the snapshots (``vectl snapshot``, docs/storage.md); each
operation's runner refreshes the VPS's Snapshot rows from what the node then
reports (``record``). A plan sells how many a VPS may keep (``snapshots``, 0 =
none) and how much space they may hold of their own (``snapshot_gib``: what
changed since each was taken; 0 = up to the disk size). Customers are held to
both when they take one; staff are not (a support snapshot before a risky fix).
"""

from datetime import datetime, timezone

from django.db import transaction
from django.db.models import Count, Sum

from hosting.core.errors import Conflict, Forbidden, Invalid
from hosting.operations import services as operations
from hosting.operations.models import Operation

from .models import Snapshot

Kind = Operation.Kind
GiB = 1 << 30


def limits(ve):
    """{"count", "allowed", "bytes", "limit_bytes"}: what the VPS's snapshots use of its
    plan's allowance."""
    plan = ve.plan
    held = ve.snapshots.aggregate(count=Count("id"), bytes=Sum("own_bytes"))
    return {"count": held["count"], "allowed": plan.snapshots, "bytes": held["bytes"] or 0,
            "limit_bytes": (plan.snapshot_gib or plan.disk_gib) * GiB}


def take(ve, user, name="", idempotency_key=None):
    """Queue a snapshot of ``ve`` named ``name`` (default: the node's UTC time)."""
    name = _valid_name(name) if name else datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    if not user.is_staff:
        used = limits(ve)
        if used["allowed"] == 0:
            raise Forbidden(f"plan {ve.plan.name} does not include snapshots")
        if used["count"] >= used["allowed"]:
            raise Conflict(f"plan {ve.plan.name} keeps {used['allowed']} snapshot(s): delete "
                           "one first")
        if used["bytes"] >= used["limit_bytes"]:
            raise Conflict(f"the snapshots hold {used['bytes'] / GiB:.1f} GiB of "
                           f"{used['limit_bytes'] / GiB:.0f} GiB allowed: delete one first")
    if ve.snapshots.filter(name=name).exists():
        raise Conflict(f"VPS {ve.hostname} has a snapshot named {name!r}")
    return operations.request(ve, Kind.SNAPSHOT, user, params={"name": name},
                              idempotency_key=idempotency_key)


def rollback(ve, user, name, idempotency_key=None):
    """Queue a rollback of ``ve``'s disk to snapshot ``name`` (it reboots if it runs)."""
    return operations.request(ve, Kind.ROLLBACK, user, params={"name": _existing(ve, name)},
                              idempotency_key=idempotency_key)


def delete(ve, user, name, idempotency_key=None):
    """Queue the deletion of ``ve``'s snapshot ``name``."""
    return operations.request(ve, Kind.SNAPSHOT_DELETE, user,
                              params={"name": _existing(ve, name)},
                              idempotency_key=idempotency_key)


def record(ve, reported):
    """Make ``ve``'s Snapshot rows what its node reports (``Engine.snapshots``)."""
    with transaction.atomic():
        ve.snapshots.exclude(name__in=[r["name"] for r in reported]).delete()
        for item in reported:
            Snapshot.objects.update_or_create(
                environment=ve, name=item["name"], defaults={
                    "created": datetime.fromtimestamp(item["created"], timezone.utc),
                    "method": item["method"], "own_bytes": item["exclusive_bytes"]})


def _valid_name(name):
    from ve import validate
    from ve.errors import InvalidConfig
    try:
        return validate.snapshot_name(name)
    except InvalidConfig as exc:
        raise Invalid(exc.message, field="name") from None


def _existing(ve, name):
    name = _valid_name(name or "")
    if not ve.snapshots.filter(name=name).exists():
        raise Invalid(f"VPS {ve.hostname} has no snapshot named {name!r}", field="name")
    return name
