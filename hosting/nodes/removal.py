"""Removing a node, and the names nodes key on.

A node may go once nothing still lives there: no live VE, no address held on
it, and no worker still beating (a running worker would re-register the node
with its next heartbeat). What only records its past goes with it: the rows of
its destroyed VEs (their usage and traffic; their operations stay, no longer
linked) and its measurements. The audit log keeps the history.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hosting.core import audit
from hosting.core.errors import Conflict

from .models import Node


def refusal(node, now=None):
    """Why ``node`` cannot be removed now, or "" if it can."""
    from hosting.environments.models import VirtualEnvironment as VE
    from hosting.ipam.models import IPAddress
    live = VE.objects.filter(node=node).live().count()
    if live:
        return (f"node {node.name} still has {live} VPS(es): migrate or terminate them "
                "first")
    held = IPAddress.objects.filter(environment__node=node).count()
    if held:
        return f"node {node.name} still has {held} address(es) held by its VPSes"
    if node.state == Node.State.ONLINE:
        return (f"node {node.name} is online: stop its worker (it is marked offline when "
                "its heartbeats stop), then remove it")
    silent = timedelta(seconds=settings.NODE_OFFLINE_AFTER_SECONDS)
    if node.last_heartbeat and node.last_heartbeat > (now or timezone.now()) - silent:
        return (f"node {node.name} is drained but its worker still runs (last heartbeat "
                f"{node.last_heartbeat:%H:%M:%S} UTC): stop the worker, or it comes back")
    return ""


def remove(node, user):
    """Delete ``node`` and what only records its past; Conflict (409) saying why not."""
    from hosting.environments.models import VirtualEnvironment as VE
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        why = refusal(node)
        if why:
            raise Conflict(why)
        gone = VE.objects.filter(node=node)  # only destroyed ones are left (checked above)
        count = gone.count()
        gone.delete()
        audit.record(user, "node.delete", node, destroyed_vpses=count)
        node.delete()


def rename_refusal(node, new_name):
    """Why ``node`` may not be renamed to ``new_name`` ("" if it may): its worker and
    queues are named after it once it reported or holds VEs."""
    from hosting.environments.models import VirtualEnvironment as VE
    if new_name == node.name:
        return ""
    if node.last_heartbeat or VE.objects.filter(node=node).exists():
        return (f"node {node.name} cannot be renamed: its worker and queues are named after "
                "it (add a node under the new name instead)")
    return ""
