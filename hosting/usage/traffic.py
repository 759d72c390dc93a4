"""Monthly traffic per VE, and the plan's quota: throttle or suspend, then lift.

A month is a calendar month in UTC (the billing cycle). The node's worker
reads each VE's cumulative counters (``record``); the quota is checked after
every reading and whenever staff grant extra traffic (``enforce``).
"""

import logging
from datetime import date

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from hosting.core import audit
from hosting.core.errors import Conflict
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import dispatch, services as operations
from hosting.operations.models import Operation

from .models import TrafficMonth

log = logging.getLogger(__name__)
GIB = 1 << 30


def month_of(moment=None):
    moment = moment or timezone.now()
    return date(moment.year, moment.month, 1)


def current(ve, moment=None):
    """This month's TrafficMonth of ``ve`` (unsaved zeros if there is none yet)."""
    month = month_of(moment)
    return TrafficMonth.objects.filter(environment=ve, month=month).first() \
        or TrafficMonth(environment=ve, month=month)


def quota_bytes(ve, month=None):
    """The month's allowance in bytes (plan + extra granted); None = unmetered."""
    if not ve.plan.bandwidth_gib:
        return None
    month = month or current(ve)
    return (ve.plan.bandwidth_gib + month.extra_gib) * GIB


def add_extra(ve, extra_gib, moment=None):
    """Grant ``extra_gib`` more traffic for this month."""
    with transaction.atomic():
        row = _month_row(ve, month_of(moment))
        TrafficMonth.objects.filter(pk=row.pk).update(extra_gib=F("extra_gib") + extra_gib)


def _month_row(ve, month):
    """The locked row of ``month``; a new month counts on from the last reading."""
    last = TrafficMonth.objects.filter(environment=ve).order_by("-month").first()
    row, _ = TrafficMonth.objects.select_for_update().get_or_create(
        environment=ve, month=month,
        defaults={"last_rx_total": last.last_rx_total if last else 0,
                  "last_tx_total": last.last_tx_total if last else 0})
    return row


def record(ve, totals, moment=None):
    """Add what the engine counted since the last reading to this month's row.

    Totals the engine could not read (None) are skipped: the next reading
    counts what this one missed."""
    if totals["rx_bytes"] is None or totals["tx_bytes"] is None:
        return None
    with transaction.atomic():
        row = _month_row(ve, month_of(moment))
        rx, tx = totals["rx_bytes"], totals["tx_bytes"]
        # Totals below the last reading (the VE was reinstalled, or powered off
        # and lost its last run's counters): start counting again from here.
        # Never add the whole new total: better to miss a little than overbill.
        row.rx_bytes += max(rx - row.last_rx_total, 0)
        row.tx_bytes += max(tx - row.last_tx_total, 0)
        row.last_rx_total, row.last_tx_total = rx, tx
        row.save(update_fields=["rx_bytes", "tx_bytes", "last_rx_total", "last_tx_total",
                                "updated"])
    return row


def enforce(ve, moment=None):
    """Throttle or suspend a VE over its quota, lift it when it is under again.

    Returns the operation queued, or None. A VE busy with another operation
    is left for the next reading.
    """
    ve = VE.objects.select_related("plan", "node").get(pk=ve.pk)
    month = current(ve, moment)
    quota, used = quota_bytes(ve, month), month.total_bytes
    over = quota is not None and used > quota
    punished = ve.throttled or ve.suspended_for_traffic
    if over == punished or ve.actual_state in (VE.State.DESTROYED, VE.State.CREATING):
        return None
    try:
        with transaction.atomic():
            ve = VE.objects.select_for_update().get(pk=ve.pk)
            if over:
                op = _punish(ve)
                audit.record(None, "ve.traffic_exceeded", ve, used=used, quota=quota,
                             then=ve.plan.over_quota)
            else:
                op = _lift(ve)
                audit.record(None, "ve.traffic_restored", ve, used=used, quota=quota)
    except _Busy:
        return None
    return op


def _punish(ve):
    if ve.plan.over_quota == ve.plan.OverQuota.SUSPEND:
        ve.suspended_for_traffic = True
        ve.desired_state = VE.State.SUSPENDED
        return _queue(ve, Operation.Kind.SUSPEND, ["suspended_for_traffic", "desired_state"])
    ve.throttled = True
    return _queue(ve, Operation.Kind.SET, ["throttled"])


def _lift(ve):
    if ve.suspended_for_traffic:
        ve.suspended_for_traffic = False
        ve.desired_state = VE.State.RUNNING
        return _queue(ve, Operation.Kind.RESUME, ["suspended_for_traffic", "desired_state"])
    ve.throttled = False
    return _queue(ve, Operation.Kind.SET, ["throttled"])


def _queue(ve, kind, fields):
    try:
        op = operations.create(ve, kind, None, {})
    except Conflict:
        raise _Busy() from None
    ve.save(update_fields=fields)
    dispatch.on_commit(op)
    return op


class _Busy(Exception):
    """The VE has an unfinished operation: try again at the next reading."""
