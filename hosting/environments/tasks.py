"""Celery tasks of backups: the schedule and expiry (control plane), and the node's
side of repository checks, deletions and looks into a backup (its chores pool)."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from hosting.controlplane import not_this_node
from hosting.operations import dispatch

from . import backup_browse

log = logging.getLogger(__name__)

CHECK_REPOSITORY = "hosting.environments.tasks.check_repository"
DELETE_BACKUPS = "hosting.environments.tasks.delete_backups"
FETCH = backup_browse.FETCH


@shared_task(name="hosting.environments.tasks.schedule_backups")
def schedule_backups():
    """Queue the backups due in the nodes' open windows (backup_schedule.py), unless
    HOSTING_BACKUP_SCHEDULE is "off"."""
    from . import backup_schedule
    if not settings.BACKUP_SCHEDULE:
        return 0
    return backup_schedule.run()


@shared_task(name="hosting.environments.tasks.check_repositories")
def check_repositories():
    """Ask every online node to verify its backup repository: its structure each day,
    every byte of it on Sundays."""
    from hosting.nodes.models import Node
    read_data = timezone.now().weekday() == 6
    for name in Node.objects.filter(state=Node.State.ONLINE).values_list("name", flat=True):
        try:
            dispatch.publish(CHECK_REPOSITORY, [name, read_data], Node(name=name).chores_queue,
                             expires=3600)
        except Exception as exc:  # kombu raises many types for "no broker": next day
            log.warning("backup check of %s not sent: %s", name, exc)


@shared_task(name="hosting.environments.tasks.expire_backups")
def expire_backups():
    """Ask the nodes to delete the backups of VPSes terminated longer ago than
    BACKUP_KEEP_DAYS_AFTER_TERMINATION; return how many were asked for."""
    from hosting.nodes.models import Node
    from hosting.operations.models import Operation
    from .models import Backup
    cutoff = timezone.now() - timedelta(days=settings.BACKUP_KEEP_DAYS_AFTER_TERMINATION)
    ended = Operation.objects.filter(kind=Operation.Kind.DESTROY,
                                     state=Operation.State.SUCCEEDED, finished__lt=cutoff)
    expired = Backup.objects.filter(environment__actual_state="destroyed",
                                    environment__operations__in=ended).distinct()
    by_node = {}
    for node, backup_id in expired.values_list("node", "backup_id"):
        by_node.setdefault(node, []).append(backup_id)
    for node, ids in by_node.items():
        try:
            dispatch.publish(DELETE_BACKUPS, [node, ids], Node(name=node).chores_queue,
                             expires=3600)
        except Exception as exc:  # kombu raises many types for "no broker": next hour
            log.warning("expired backups on %s not sent: %s", node, exc)
    return sum(map(len, by_node.values()))


@shared_task(name=CHECK_REPOSITORY)
def check_repository(node_name, read_data=False):
    """Verify this node's repository (restic check); the result goes on its Node row
    (a damaged repository is a warning on the staff's node and backup pages)."""
    if not_this_node(node_name):
        return None
    from ve.errors import VEError
    from hosting.nodes.models import Node
    from hosting.operations.executor import engine
    eng = engine()
    try:
        if eng.backups():  # no repository yet: nothing to check
            eng.backup_check(read_data=bool(read_data))
        error = ""
    except VEError as exc:
        error = exc.message
    Node.objects.filter(name=node_name).update(backup_checked=timezone.now(),
                                               backup_check_error=error[:2000])
    return error or "ok"


@shared_task(name=DELETE_BACKUPS)
def delete_backups(node_name, backup_ids):
    """Delete these backups from this node's repository, and their rows."""
    if not_this_node(node_name):
        return None
    from . import backup_node
    return backup_node.delete(backup_ids)


@shared_task(name=FETCH)
def fetch_from_backup(node_name, fetch_id):
    """Answer a look into a backup (a directory's entries, a file's bytes)."""
    if not_this_node(node_name):
        return None
    from . import backup_node
    return backup_node.answer(fetch_id)
