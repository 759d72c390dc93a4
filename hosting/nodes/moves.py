"""Asking for a VPS to move to another node: which nodes can take it, and the request.

Staff ask (API ``POST /api/v1/environments/<veid>/migrate/``, or the VPS's staff
page) for a node, or for the best node by the placement rule. A node can take a
VPS when it is online, reports a migration identity, has the VPS's OS template
and serves the pools of all its addresses (so they keep working there); the
placement rule then says whether it has room. The move itself is the "migrate"
operation (``hosting/operations/moving.py``) on the VPS's node.
"""

from django.db.models import Q

from hosting.core.errors import Conflict, Invalid
from hosting.operations import services as operations
from hosting.operations.models import Operation

from hosting.usage import capacity, whatif

from . import placement
from .models import Node
from .placement import Fleet, NoCapacity


def refusal(ve, node):
    """Why ``node`` cannot take ``ve`` now (a sentence), or "" if it can."""
    if node.pk == ve.node_id:
        return f"VPS {ve.hostname} is on {node.name} already"
    if node.state != Node.State.ONLINE:
        return f"node {node.name} is {node.get_state_display().lower()}"
    if not (node.migrate_address and node.migrate_key):
        return f"node {node.name} has reported no migration address yet"
    if not ve.node.migrate_key:
        return f"node {ve.node.name} (where the VPS is) has reported no migration key yet"
    if ve.template.name not in node.templates:
        return f"node {node.name} does not have OS template {ve.template.name}"
    served = set(node.ip_pools.values_list("pk", flat=True))
    for address in ve.addresses.select_related("pool"):
        if address.pool_id not in served:
            return f"node {node.name} does not serve pool {address.pool.name} ({address})"
    return ""


def candidates(ve):
    """The nodes that could take ``ve`` ({node: refusal or ""}), by name."""
    return {node: refusal(ve, node) for node in Node.objects.exclude(pk=ve.node_id)}


def best_node(ve):
    """The node the placement rule picks for ``ve`` among those that can take it;
    Conflict saying why when none can."""
    nodes = candidates(ve)
    able = [node for node, why in nodes.items() if not why]
    if not able:
        reasons = "; ".join(nodes.values()) or "there is no other node"
        raise Conflict(f"no node can take VPS {ve.hostname}: {reasons}")
    try:
        return _fleet(able).choose(want(ve), f"VPS {ve.hostname}").node
    except NoCapacity as exc:
        raise Conflict(str(exc)) from None


def shortfall(ve, node):
    """What ``node`` lacks for ``ve`` (empty: it fits), moves under way counted."""
    room = _fleet([node]).rooms[0]
    return room.lacking(*want(ve)(room))


def want(ve, profile=None):
    """(Demand, Use) of ``ve`` in a room: its plan's sales, and its own measured p95
    where there is one (else what its plan is expected to use), as what-if drains do."""
    profile = capacity.stored() if profile is None else profile
    own = whatif.own_p95([ve], profile).get(ve.pk)

    def of(room):
        return placement.demand(ve.plan, room.node.cpus), own or room.expect(ve.plan)
    return of


def _fleet(nodes):
    """Rooms of ``nodes`` with the VPSes already on their way there counted in."""
    profile = capacity.stored()
    fleet = Fleet(nodes, profile)
    count_moves_under_way({room.node.name: room for room in fleet.rooms}, profile)
    return fleet


def count_moves_under_way(rooms, profile, sources_too=False):
    """Count each unfinished move as made in ``rooms`` ({node name: Room}): its VPS is
    taken at its target; with ``sources_too``, also given back at its source (a
    plan of moves; placement leaves the source as it is until the VPS is gone)."""
    # A VPS restored on the node that keeps its backup, for another node, is on its way too.
    moving = Q(kind=Operation.Kind.MIGRATE) | Q(kind=Operation.Kind.CREATE, params__has_key="to")
    for op in Operation.objects.filter(moving, state__in=Operation.UNFINISHED) \
            .select_related("environment__plan", "environment__node"):
        ve, target = op.environment, rooms.get(op.params.get("to"))
        if ve is None or target is None or ve.node.name == target.node.name:
            continue
        of = want(ve, profile)
        target.take(*of(target))
        source = rooms.get(ve.node.name)
        if sources_too and source is not None:
            source.give_back(*of(source))


def request(ve, user, node=None, offline=False, idempotency_key=None):
    """Queue the move of ``ve`` to ``node`` (a Node, a name, or None for the best node);
    return the Operation. Forbidden for anyone without nodes.manage; Conflict when
    the node cannot take it or the VPS is busy."""
    operations.check_actor(user, Operation.Kind.MIGRATE)
    if node is None:
        node = best_node(ve)
    elif not isinstance(node, Node):
        node = Node.objects.filter(name=node).first()
        if node is None:
            raise Invalid("no such node", field="node")
    why = refusal(ve, node)
    lacking = not why and shortfall(ve, node)
    if why or lacking:
        raise Conflict(why or f"node {node.name} has no {', '.join(lacking)} left for "
                              f"VPS {ve.hostname}")
    params = {"to": node.name, "from": ve.node.name, "offline": bool(offline)}
    return operations.request(ve, Operation.Kind.MIGRATE, user, params,
                              idempotency_key=idempotency_key)
