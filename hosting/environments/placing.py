"""Which node a new VPS is made on (``place``), and, for one restored from a backup,
where it then lives (``where``).

A backup in a shared repository (sftp:, s3:) is read from any node: the VPS is
made where the placement rule, or staff, put it. A backup in a node's own
directory (the default) is read only on that node: the VPS is made there and,
when staff chose another node or that node has no room left for the plan, it is
moved to its home node (offline, started there: ``vectl migrate --start``) by
the same create operation, which then goes on at its home (its logins).
"""

from hosting.core.errors import Conflict
from hosting.nodes.models import Node
from hosting.nodes.placement import Fleet, NoCapacity, choose_node, shortfall


def where(backup, plan, chosen=None):
    """(node the VPS is made on, node it moves to or None) for a VPS of ``plan`` made
    from ``backup``; ``chosen``: the node staff want it on (None: the placement rule).
    Conflict saying why when it cannot be placed. Call inside a transaction: the nodes'
    rows are locked."""
    if backup.shared:
        return node_for(plan, chosen), None
    keeper = Node.objects.select_for_update().filter(name=backup.node).first()
    if keeper is None or keeper.state != Node.State.ONLINE:
        raise Conflict(f"backup {backup.short_id} is kept on a node that is not available "
                       "now; try again later")
    if chosen is None or chosen.pk == keeper.pk:
        lacking = shortfall(keeper, plan)
        if not lacking:
            return keeper, None
        if chosen is not None:
            raise Conflict(f"node {keeper.name} has no {', '.join(lacking)} left for plan "
                           f"{plan.name}", field="plan")
    if "disk" in shortfall(keeper, plan):  # the VPS's disk is made there first
        raise Conflict(f"the node that keeps backup {backup.short_id} has no disk space left "
                       f"to restore it onto (plan {plan.name}); pick a smaller plan or ask "
                       "support", field="plan")
    home = on(chosen, plan) if chosen else _reachable_from(keeper, plan, backup)
    why = _cannot_move(keeper, home)
    if why:
        raise Conflict(f"backup {backup.short_id} is kept on node {keeper.name}, which has no "
                       f"room for plan {plan.name}, and {why}", field="plan")
    return keeper, home


def _reachable_from(keeper, plan, backup):
    """The placement rule's node for ``plan`` among those ``keeper`` can move a VPS to."""
    nodes = Node.objects.filter(state=Node.State.ONLINE).exclude(pk=keeper.pk) \
        .exclude(migrate_address="").exclude(migrate_key="")
    try:
        room = Fleet(list(nodes)).choose(lambda room: room.want(plan), f"plan {plan.name}")
    except NoCapacity as exc:
        raise Conflict(f"backup {backup.short_id} is kept on node {keeper.name}, which has no "
                       f"room for plan {plan.name}; among the nodes it could go to, {exc}",
                       field="plan") from exc
    return on(room.node, plan)


def node_for(plan, chosen=None):
    """The node a new VPS of ``plan`` is made on: staff's ``chosen`` one if it fits, else
    the placement rule's; its row locked. Conflict saying why none."""
    return on(chosen, plan) if chosen else place(plan)


def place(plan):
    """The node the placement rule picks for a new VPS of ``plan``, its row locked;
    Conflict naming what ran out."""
    try:
        node = choose_node(plan)
    except NoCapacity as exc:
        raise Conflict(str(exc), field="plan") from exc
    # Re-check under the node's row lock (PostgreSQL; SQLite serialises writers).
    node = Node.objects.select_for_update().get(pk=node.pk)
    if shortfall(node, plan):
        raise Conflict(f"node {node.name} just ran out of room for plan {plan.name}; try again")
    return node


def on(node, plan):
    """Staff's chosen ``node``, its row locked, if it is online and has room for
    ``plan``; Conflict saying why not."""
    node = Node.objects.select_for_update().get(pk=node.pk)
    if node.state != Node.State.ONLINE:
        raise Conflict(f"node {node.name} is {node.get_state_display().lower()}", field="node")
    lacking = shortfall(node, plan)
    if lacking:
        raise Conflict(f"node {node.name} has no {', '.join(lacking)} left for plan "
                       f"{plan.name}", field="node")
    return node


def _cannot_move(keeper, home):
    """Why a VPS made on ``keeper`` cannot be moved to ``home`` ("" if it can)."""
    if home.pk == keeper.pk:
        return "no other node has room either"
    if not keeper.migrate_key:
        return f"node {keeper.name} has reported no migration key yet"
    if not (home.migrate_address and home.migrate_key):
        return f"node {home.name} has reported no migration address yet"
    return ""
