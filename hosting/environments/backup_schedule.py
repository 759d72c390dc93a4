"""Scheduled backups: each node backs up its VPSes in its own window, a few at a time.

Every minute (Celery beat) ``run`` looks at each online node whose window
(``Node.backup_window_start`` for ``backup_window_hours``, UTC) is open and
queues backups of the VPSes that are due, oldest backup first, up to the node's
``backup_parallel`` running at once: backups never all run at once, and a node's
operations worker keeps slots for power buttons. A VPS is due when its plan
sells backups and none was taken in the last 20 hours (a customer's own backup
counts), and nobody asked anything of it in the last QUIET minutes (a VPS being
worked on is backed up later in the window, not in the middle of it: a backup
holds its other operations back while it runs). A failed backup is tried again
after BACKUP_RETRY_MINUTES, at most BACKUP_ATTEMPTS times a day; each failure
stays in the VPS's history and on its node's staff page.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from hosting.core.errors import Conflict
from hosting.nodes.models import Node
from hosting.operations.models import Operation

from . import backups
from .models import VirtualEnvironment as VE

log = logging.getLogger(__name__)

DAILY = timedelta(hours=20)  # a little under a day, so the time of day does not drift
QUIET = timedelta(minutes=10)
STATES = ("running", "stopped", "suspended", "hibernated")
_FAILED = Q(operations__kind=Operation.Kind.BACKUP, operations__state=Operation.State.FAILED)


def in_window(node, now):
    """True while ``node``'s backup window is open at ``now``."""
    if node.backup_window_hours >= 24:
        return True
    return (now.hour - node.backup_window_start) % 24 < node.backup_window_hours


def due(node, now):
    """The VPSes of ``node`` whose daily backup is due at ``now``, most overdue first."""
    since = now - DAILY
    return VE.objects.filter(node=node, plan__backups_daily__gt=0, actual_state__in=STATES) \
        .annotate(last=Max("backups__created"),
                  failures=Count("operations", filter=_FAILED & Q(
                      operations__created__gte=since), distinct=True),
                  last_failure=Max("operations__finished", filter=_FAILED)) \
        .filter(Q(last__isnull=True) | Q(last__lt=since)) \
        .filter(failures__lt=settings.BACKUP_ATTEMPTS) \
        .filter(Q(last_failure__isnull=True) | Q(
            last_failure__lt=now - timedelta(minutes=settings.BACKUP_RETRY_MINUTES))) \
        .exclude(operations__state__in=Operation.UNFINISHED) \
        .exclude(pk__in=Operation.objects.filter(requested_by__isnull=False,
                                                 created__gte=now - QUIET)
                 .values("environment_id")) \
        .select_related("node", "plan").order_by(F("last").asc(nulls_first=True), "veid")


def run(now=None):
    """Queue the backups due on every node whose window is open; return how many."""
    now = now or timezone.now()
    queued = 0
    for node in Node.objects.filter(state=Node.State.ONLINE):
        if in_window(node, now):
            queued += _fill(node, now)
    return queued


def _fill(node, now):
    running = Operation.objects.filter(environment__node=node, kind=Operation.Kind.BACKUP,
                                       state__in=Operation.UNFINISHED).count()
    queued = 0
    for ve in due(node, now)[:max(0, node.backup_parallel - running)]:
        try:
            backups.take_scheduled(ve)
            queued += 1
        except Conflict as exc:  # an operation was queued on it since: next minute
            log.info("VE %s: scheduled backup waits (%s)", ve.veid, exc)
    return queued
