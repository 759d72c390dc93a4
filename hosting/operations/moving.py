"""The "migrate" operation: move a VPS to another node with the engine's migrate.

It runs on the source node (the VPS's node when it was queued). The engine
moves it live (CRIU) or offline and keeps it on exactly one node; this runner
records where it ended up. Run again after its worker died, it converges: a
move cut off mid-way is finished or rolled back by the engine (its in-flight
record), a move that finished but was not recorded is found at the target, and
once the database names the target the operation finishes there.
"""

from django.conf import settings

from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes import peers
from hosting.nodes.models import Node
from ve.errors import InvalidConfig, NotFound, ResourceError

KEPT_STATES = (VE.State.RUNNING, VE.State.STOPPED, VE.State.SUSPENDED)


class GoesOnThere(Exception):
    """Raised by a runner whose VE now lives on ``node``: the operation is not finished,
    it goes on in that node's queue (the executor records the VE there and sends it)."""

    def __init__(self, node):
        super().__init__(f"goes on at node {node.name}")
        self.node = node


def migrate(ctx):
    """Move ``ctx.ve`` to node ``params["to"]`` (``params["offline"]``: stop, copy, start)."""
    params, veid = ctx.op.params, ctx.ve.veid
    target = Node.objects.get(name=params["to"])
    if ctx.ve.node_id == target.pk:
        return _state_before(ctx)  # an earlier attempt moved and recorded it
    if not on_this_node(ctx) and ctx.engine.migration_in_flight(veid) is None:
        return _found_there(ctx, target)
    if not target.migrate_address:
        raise InvalidConfig(f"node {target.name} reports no migration address "
                            "(HOSTING_MIGRATE_ADDRESS of its workers)", veid)
    ctx.progress(5, "checking the target node")
    peers.trust_peers(settings.NODE_NAME, ctx.engine)  # its host key, if it is new
    ctx.progress(10, "copying the disk while the VPS runs" if _running(ctx)
                 else "copying the VPS")
    result = ctx.engine.migrate(veid, target.migrate_address, live=not params.get("offline"))
    return _moved(ctx, target, result)


def _found_there(ctx, target):
    """Not on this node and no move in flight: an earlier attempt moved it and died
    before recording it, or it is lost. The target's answer decides."""
    try:
        there = ctx.engine.status_at(ctx.ve.veid, target.migrate_address)
    except (ResourceError, InvalidConfig) as exc:
        raise NotFound(f"the VE is not on this node and {target.name} cannot be asked "
                       f"({exc.message})", ctx.ve.veid) from exc
    if not there["exists"]:
        raise NotFound(f"the VE is neither on this node nor on {target.name}", ctx.ve.veid)
    return _moved(ctx, target, {"mode": "settled", "downtime_s": None})


def _moved(ctx, target, result):
    """Record the VPS at ``target`` and what the move cost (the customer sees it)."""
    VE.objects.filter(pk=ctx.ve.pk).update(node=target)
    ctx.op.params["result"] = result  # kept with the operation when it finishes
    ctx.note(_customer_note(result))
    return _state_before(ctx)


def _customer_note(result):
    """What the VPS's owner reads in its history (never node names)."""
    downtime, mode = result.get("downtime_s"), result.get("mode")
    if mode == "settled":
        return "moved to another host"
    if downtime is None:
        return "moved to another host while stopped"
    how = "with its processes and connections" if mode == "live" else "restarted there"
    return f"moved to another host, {how}: {downtime:.1f} s without service"


def _state_before(ctx):
    state = ctx.ve.actual_state
    return state if state in KEPT_STATES else None


def on_this_node(ctx):
    """True if this node's engine has the operation's VE."""
    try:
        ctx.engine.config(ctx.ve.veid)
        return True
    except NotFound:
        return False


def _running(ctx):
    try:
        return ctx.engine.status(ctx.ve.veid).state == "running"
    except NotFound:
        return False
