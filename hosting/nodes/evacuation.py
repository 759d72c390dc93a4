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
from django.utils import timezone

from hosting.core import audit
from hosting.core.errors import Conflict, Invalid, ServiceError
from hosting.operations import services as operations
from hosting.operations.models import Operation

from . import moves
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
    user = get_user_model().objects.filter(pk=plan["by"]).first()
    left = list(node.environments.live().select_related("plan", "template", "node")
                .order_by("-plan__ram_mb", "veid"))
    if not left:
        _update(node, finished=timezone.now().isoformat())
        return
    moving = _moving_off(node, plan["started"])
    stuck = dict(plan.get("stuck", {}))
    room = plan["parallel"] - len(moving)
    for ve in left:
        if room <= 0:
            break
        if ve.pk in moving or str(ve.veid) in stuck:
            continue
        failed = _failed_move(ve, plan["started"])
        if failed:
            stuck[str(ve.veid)] = failed
            continue
        try:
            moves.request(ve, user, None)
            room -= 1
        except Conflict as exc:
            if "busy" not in exc.message:  # another operation runs: next round
                stuck[str(ve.veid)] = exc.message
        except ServiceError as exc:  # the requester lost the right, say
            stuck[str(ve.veid)] = exc.message
    if stuck != plan.get("stuck"):
        _update(node, stuck=stuck)


def progress(node):
    """Per VPS of ``node`` (and those that left during the evacuation): its move, for
    the node's page: [{veid, hostname, state, progress, message}]."""
    plan = node.evacuation
    if not plan:
        return []
    ops = (Operation.objects.filter(kind=Operation.Kind.MIGRATE, params__from=node.name,
                                    created__gte=plan["started"])
           .select_related("environment").order_by("environment__veid", "-created"))
    rows, seen = [], set()
    for op in ops:
        if op.environment_id in seen or op.environment is None:
            continue
        seen.add(op.environment_id)
        rows.append({"veid": op.environment.veid, "hostname": op.environment.hostname,
                     "state": op.state, "progress": op.progress,
                     "message": op.error or op.message or op.params.get("to", "")})
    for ve in node.environments.live():
        if ve.pk not in seen:
            why = plan.get("stuck", {}).get(str(ve.veid))
            rows.append({"veid": ve.veid, "hostname": ve.hostname,
                         "state": "stuck" if why else "waiting", "progress": 0,
                         "message": why or ""})
    return sorted(rows, key=lambda row: row["veid"])


def _moving_off(node, since):
    return set(Operation.objects.filter(
        kind=Operation.Kind.MIGRATE, state__in=Operation.UNFINISHED, params__from=node.name,
        created__gte=since).values_list("environment_id", flat=True))


def _failed_move(ve, since):
    """The error of a move of ``ve`` that failed during this evacuation, or ""."""
    op = ve.operations.filter(kind=Operation.Kind.MIGRATE, state=Operation.State.FAILED,
                              created__gte=since).first()
    return f"its move failed: {op.error}" if op else ""


def _update(node, **changes):
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        node.evacuation = {**node.evacuation, **changes}
        node.save(update_fields=["evacuation"])
