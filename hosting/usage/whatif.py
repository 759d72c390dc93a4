"""What-if: where a number of new VEs of a plan, or a node's VEs, would go.

Both run the placement rule real orders follow (hosting/nodes/placement.py),
on the stored measurement real orders read (capacity.stored), one VE after
the other, and give each online node's ratios and headroom before and after.
"""

from hosting.nodes import placement

from . import capacity
from .period import Period

MAX_COUNT = 10000


class Refused(ValueError):
    """A what-if that cannot be asked (the message says why)."""


def add(plan, count, profile=None):
    """Place ``count`` new VEs of ``plan``: {"placed": [node name per VE], "unplaced",
    "why", "nodes": [{node, before, after}]}."""
    if not 1 <= count <= MAX_COUNT:
        raise Refused(f"count must be between 1 and {MAX_COUNT}")
    fleet = placement.Fleet.online(profile)
    return _run(fleet, [(f"{plan.name} #{i + 1}", f"plan {plan.name}",
                         lambda room: room.want(plan)) for i in range(count)],
                "no node is online")


def drain(node, profile=None):
    """Move every live VE of ``node`` (biggest RAM first) to the other online nodes; each
    measured VE takes its own p95 with it, a young one its plan's expected use."""
    profile = capacity.stored() if profile is None else profile
    ves = sorted(node.environments.live().select_related("plan"),
                 key=lambda ve: (-ve.plan.ram_mb, ve.veid))
    own = own_p95(ves, profile)
    fleet = placement.Fleet.online(profile, exclude=node)

    def want(ve):
        def of(room):
            need = placement.demand(ve.plan, room.node.cpus)
            return need, own.get(ve.pk) or room.expect(ve.plan)
        return of
    return _run(fleet, [(f"{ve.veid} {ve.hostname}", f"VE {ve.veid}", want(ve)) for ve in ves],
                f"no node other than {node.name} is online")


def _run(fleet, wants, nowhere):
    """Place ``wants`` one after the other; ``nowhere`` says why nothing can be placed
    when the fleet has no node at all (it is also the result's ``nowhere``)."""
    before = {room.node.name: room.summary() for room in fleet.rooms}
    placed, unplaced = [], []
    for label, what, want in wants:
        if not fleet.rooms:
            unplaced.append((label, nowhere))
            continue
        try:
            placed.append((label, fleet.place(want, what).node.name))
        except placement.NoCapacity as exc:
            unplaced.append((label, str(exc)))
    return {"placed": placed, "unplaced": unplaced, "nowhere": nowhere,
            "nodes": [{"node": room.node.name, "before": before[room.node.name],
                       "after": room.summary(),
                       "added": sum(1 for _, name in placed if name == room.node.name)}
                      for room in fleet.rooms]}


def own_p95(ves, profile):
    """{VE pk: Use(p95 RAM, p95 CPU)} of the measured ones among ``ves``, over the
    period the stored measurement covers."""
    if not profile.computed_at:
        return {}
    measured, period = _measurement(profile)
    return {ve.pk: placement.Use(period.ram_p95[ve.pk], period.cpu_p95[ve.pk])
            for ve in ves if ve.pk in measured and ve.pk in period.ram_p95}


# The last profile's measured VEs and Period: a plan of moves asks ``own_p95`` once per
# VE and per candidate node, each time with the same profile object; building the set
# and reading the figures each time made a fleet of 10,000 VEs quadratic.
_last = (None, frozenset(), None)


def _measurement(profile):
    """(VE pks measured, the Period measured) of ``profile``, kept for the last one."""
    global _last
    last, measured, period = _last
    if last is not profile:
        measured = frozenset().union(*(use.measured for use in profile.nodes.values()))
        period = Period(profile.days, profile.computed_at, stand_in=True)
        _last = (profile, measured, period)  # one assignment: threads see all or nothing
    return measured, period
