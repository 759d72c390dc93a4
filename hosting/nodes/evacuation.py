"""Evacuating a node: every VPS moves elsewhere, a few at a time, and the node drains.

Staff start it (the node's page or ``POST /api/v1/nodes/<id>/evacuate/``): the
node turns draining (no new VPSes) and ``step`` queues "migrate" operations,
at most ``parallel`` at once, biggest VPS first, each to the best node that can
take it then (moves under way counted). Housekeeping calls ``step`` every few
seconds (beat) until no VPS is left; a VPS that cannot move (no node fits, or
its move failed) is left where it is and named with the reason, and the
evacuation goes on with the others. Staff may stop it: moves under way finish.
"""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hosting.core import audit
from hosting.core.errors import Conflict, Invalid
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import services as operations
from hosting.operations.models import Operation

from . import batches
from .models import Node

MAX_PARALLEL = 8


def start(node, user, parallel=2):
    """Begin evacuating ``node`` with ``user``'s authority; return the node."""
    operations.check_actor(user, Operation.Kind.MIGRATE)
    if not 1 <= int(parallel) <= MAX_PARALLEL:
        raise Invalid(f"parallel must be between 1 and {MAX_PARALLEL}", field="parallel")
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        if node.evacuation and not node.evacuation.get("finished"):
            raise Conflict(f"node {node.name} is being evacuated already")
        node.state = Node.State.DRAINING
        node.evacuation = {"started": timezone.now().isoformat(), "by": user.pk,
                           "parallel": int(parallel), "stuck": {}}
        node.save(update_fields=["state", "evacuation"])
        audit.record(user, "node.evacuate", node, parallel=int(parallel))
    transaction.on_commit(lambda: step(node))
    return node


def stop(node, user):
    """Stop queueing moves off ``node`` (those under way finish); it stays draining."""
    operations.check_actor(user, Operation.Kind.MIGRATE)
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        if not node.evacuation or node.evacuation.get("finished"):
            raise Conflict(f"node {node.name} is not being evacuated")
        node.evacuation = {**node.evacuation, "finished": timezone.now().isoformat(),
                           "stopped": True}
        node.save(update_fields=["evacuation"])
        audit.record(user, "node.evacuate_stop", node)
    return node


def step_all():
    """One step of every evacuation under way (housekeeping's beat)."""
    for node in Node.objects.all():  # a few rows; JSON lookups differ between databases
        if node.evacuation and not node.evacuation.get("finished"):
            step(node)


def step(node):
    """Queue the next moves off ``node``; mark the evacuation finished when it is empty."""
    node = Node.objects.get(pk=node.pk)
    plan = node.evacuation
    if not plan or plan.get("finished"):
        return
    left = list(node.environments.live().select_related("plan", "template", "node")
                .order_by("-plan__ram_mb", "veid"))
    if not left:
        _update(node, finished=timezone.now().isoformat())
        return
    user = get_user_model().objects.filter(pk=plan["by"]).first()
    stuck = batches.advance([(ve, None) for ve in left], plan["started"], plan["parallel"],
                            user, plan.get("stuck", {}))
    if stuck != plan.get("stuck"):
        _update(node, stuck=stuck)


def progress(node):
    """Per VPS of ``node`` (and those that left during the evacuation): its move, for
    the node's page: [{veid, hostname, state, progress, message}]."""
    plan = node.evacuation
    if not plan:
        return []
    moved = Operation.objects.filter(kind=Operation.Kind.MIGRATE, params__from=node.name,
                                     created__gte=plan["started"]).values("environment")
    ves = VE.objects.filter(Q(node=node) | Q(pk__in=moved)).live()
    return batches.progress(list(ves), plan["started"], plan.get("stuck", {}))


def _update(node, **changes):
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        node.evacuation = {**node.evacuation, **changes}
        node.save(update_fields=["evacuation"])
