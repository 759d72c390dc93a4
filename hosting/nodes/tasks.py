"""Housekeeping of nodes (runs on the unprivileged 'hosting' queue)."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .models import Node


@shared_task(name="hosting.nodes.tasks.mark_stale_nodes")
def mark_stale_nodes():
    """A node whose worker stopped beating is offline: it takes no new VEs."""
    cutoff = timezone.now() - timedelta(seconds=settings.NODE_OFFLINE_AFTER_SECONDS)
    return Node.objects.filter(state=Node.State.ONLINE).filter(
        Q(last_heartbeat__lt=cutoff) | Q(last_heartbeat__isnull=True)
    ).update(state=Node.State.OFFLINE)


@shared_task(name="hosting.nodes.tasks.move_batches")
def move_batches():
    """Queue the next moves of every evacuation and every rebalance due
    (hosting/nodes/evacuation.py, rebalance.py)."""
    from . import evacuation, rebalance
    evacuation.step_all()
    rebalance.step_all()
