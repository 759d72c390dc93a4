"""Rebalancing: the moves that bring every node back under its risk level.

From the same figures and rule as placement (hosting/nodes/placement.py): a
node is over when its expected RAM or CPU use passes its risk level. For each
node over (the worst first), its VPSes leave biggest first (by what they use of
the resource it is over on: their own measured p95, else their plan's expected
use), each to the best node that can take it and stays within its own limits,
until the node is under. Biggest first keeps the number of moves small; it is a
greedy rule, not a proof of the minimum. When a node stays over even after
every VPS that could leave has left, the plan says so and by how much.

Staff apply the plan now or schedule it for a maintenance window (``apply``): a
Rebalance whose moves housekeeping's beat queues a few at a time (``step``).
"""

from django.db import transaction
from django.utils import timezone

from hosting.core import audit
from hosting.core.errors import Conflict, Invalid
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import services as operations
from hosting.operations.models import Operation
from hosting.usage import capacity

from . import batches, moves
from .evacuation import MAX_PARALLEL
from .models import Node, Rebalance
from .placement import Fleet


def plan(profile=None):
    """{"moves": [{veid, hostname, from, to, ram, cpu}], "unsolved": [sentence],
    "over": [node names over now], "nodes": [{node, before, after}]} for the online
    nodes, moves under way counted as done."""
    profile = capacity.stored() if profile is None else profile
    nodes = list(Node.objects.filter(state=Node.State.ONLINE))
    fleet = Fleet(nodes, profile)
    rooms = {room.node.name: room for room in fleet.rooms}
    moves.count_moves_under_way(rooms, profile, sources_too=True)
    before = {name: room.summary() for name, room in rooms.items()}
    over = [name for name, room in rooms.items() if room.over()]
    planned, unsolved = [], []
    for source in sorted((rooms[name] for name in over), key=_excess, reverse=True):
        resource = _worst(source)
        for ve in _leaving_order(source, resource, profile):
            if not source.over():
                break
            target = _target(ve, source, rooms, profile)
            if target is None:
                continue
            want = moves.want(ve, profile)
            source.give_back(*want(source))
            target.take(*want(target))
            planned.append({"veid": ve.veid, "hostname": ve.hostname,
                            "from": source.node.name, "to": target.node.name,
                            "ram": want(source)[1].ram, "cpu": want(source)[1].cpu})
        if source.over():
            unsolved.append(_still_over(source))
    return {"moves": planned, "unsolved": unsolved, "over": over,
            "nodes": [{"node": name, "before": before[name], "after": room.summary()}
                      for name, room in rooms.items()]}


def _excess(room):
    return max((used - limit) / limit if limit else 0
               for used, limit in zip(room.use, room.limit))


def _worst(room):
    """The resource ``room`` is furthest over on ("ram" or "cpu")."""
    return max(room.over(), key=lambda name: getattr(room.use, name) / (
        getattr(room.limit, name) or 1))


def _leaving_order(room, resource, profile):
    """The VPSes of ``room`` not already moving, biggest user of ``resource`` first."""
    busy = Operation.objects.filter(state__in=Operation.UNFINISHED).values("environment")
    ves = list(VE.objects.filter(node=room.node).live().exclude(pk__in=busy)
               .select_related("plan", "template", "node"))
    use = {ve.pk: getattr(moves.want(ve, profile)(room)[1], resource) for ve in ves}
    return sorted(ves, key=lambda ve: (-use[ve.pk], ve.veid))


def _target(ve, source, rooms, profile):
    """The best room other than ``source`` that can take ``ve`` and stay within its
    limits (None: none)."""
    want = moves.want(ve, profile)
    fits = []
    for room in rooms.values():
        if room is source or moves.refusal(ve, room.node):
            continue
        need, expect = want(room)
        if not room.lacking(need, expect):
            fits.append((room._rank(need, expect), room))
    return min(fits, key=lambda fit: fit[0])[1] if fits else None


def _still_over(room):
    parts = []
    for name in room.over():
        used, limit = getattr(room.use, name), getattr(room.limit, name)
        amount = f"{(used - limit) / (1 << 30):.1f} GiB" if name == "ram" else \
            f"{used - limit:.2f} CPUs"
        parts.append(f"{name.upper()} by {amount}")
    return (f"node {room.node.name} stays over its {room.node.risk_pct}% risk level "
            f"({', '.join(parts)}): no other node can take enough of its VPSes")


def apply(user, run_at=None, parallel=2):
    """Apply the plan now (``run_at`` None or past) or at ``run_at`` (planned again then,
    from the figures of that moment). Return the Rebalance; Conflict if nothing needs
    to move now."""
    operations.check_actor(user, Operation.Kind.MIGRATE)
    if not 1 <= int(parallel) <= MAX_PARALLEL:
        raise Invalid(f"parallel must be between 1 and {MAX_PARALLEL}", field="parallel")
    now = timezone.now()
    later = run_at is not None and run_at > now
    planned = [] if later else plan()["moves"]
    if not later and not planned:
        raise Conflict("nothing to move: every online node is within its risk level, or "
                       "no move helps (see the plan)")
    with transaction.atomic():
        batch = Rebalance.objects.create(requested_by=user, run_at=run_at if later else now,
                                         parallel=int(parallel), moves=planned)
        audit.record(user, "rebalance.apply", batch, moves=len(planned),
                     run_at=batch.run_at.isoformat())
    if not later:
        transaction.on_commit(lambda: step(batch))
    return batch


def cancel(batch, user):
    """Queue no more of ``batch``'s moves (those under way finish)."""
    operations.check_actor(user, Operation.Kind.MIGRATE)
    with transaction.atomic():
        batch = Rebalance.objects.select_for_update().get(pk=batch.pk)
        if batch.finished or batch.cancelled:
            raise Conflict("this rebalance is over already")
        batch.cancelled = True
        batch.finished = timezone.now()
        batch.save(update_fields=["cancelled", "finished"])
        audit.record(user, "rebalance.cancel", batch)
    return batch


def step_all():
    """One step of every rebalance due (housekeeping's beat)."""
    for batch in Rebalance.objects.filter(finished__isnull=True, cancelled=False,
                                          run_at__lte=timezone.now()):
        step(batch)


def step(batch):
    """Begin ``batch`` if due (planning it then if it was scheduled), queue its next
    moves, and mark it done once each move happened or is stuck."""
    batch = Rebalance.objects.get(pk=batch.pk)
    if batch.finished or batch.cancelled or batch.run_at > timezone.now():
        return
    if batch.started is None:
        batch.started = timezone.now()
        batch.moves = batch.moves or plan()["moves"]
        batch.save(update_fields=["started", "moves"])
    ves = {ve.veid: ve for ve in VE.objects.filter(veid__in=[m["veid"] for m in batch.moves])
           .live().select_related("plan", "template", "node")}
    pending = [(ves[m["veid"]], m["to"]) for m in batch.moves if m["veid"] in ves
               and ves[m["veid"]].node.name != m["to"] and str(m["veid"]) not in batch.stuck]
    if not pending:
        Rebalance.objects.filter(pk=batch.pk).update(finished=timezone.now())
        return
    stuck = batches.advance(pending, batch.started, batch.parallel, batch.requested_by,
                            batch.stuck)
    if stuck != batch.stuck:
        Rebalance.objects.filter(pk=batch.pk).update(stuck=stuck)


def progress(batch):
    """[{veid, hostname, state, progress, message, from, to}] of ``batch``'s moves."""
    if not batch.started:
        return []
    ves = list(VE.objects.filter(veid__in=[m["veid"] for m in batch.moves]))
    rows = {row["veid"]: row for row in batches.progress(ves, batch.started, batch.stuck)}
    return [{**m, **rows.get(m["veid"], {"state": "gone", "progress": 0, "message": ""})}
            for m in batch.moves]
