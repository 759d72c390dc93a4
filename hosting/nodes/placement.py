"""Placement: which online node takes one more VE, by what was sold and what is used.

Both rules must hold on a node after placing:

- *Sales*: for RAM, swap, CPUs and disk, the sum of its live VEs' plan limits
  stays within physical size times the node's overcommit ratio.
- *Use*: its expected RAM and CPU use stays within its risk level
  (``Node.risk_pct`` of physical). Expected use is the node's measured load
  (hosting/usage/capacity.py: p95 of the hourly sum of its measured VEs) plus,
  for each VE not measured yet (new ones included), its plan's limit times the
  plan's observed p95 share. A plan never measured counts at risk/ratio of its
  limit, the share the overcommit ratio assumes: selling up to the ratio then
  fills the node exactly to its risk level until real figures arrive.

Among the nodes that fit, the one with the most RAM use left wins (then the
most RAM left to sell, then the name). The same Room and Fleet answer real
orders (choose_node, shortfall) and the what-if report, so they cannot disagree.
"""

import math
from collections import Counter, namedtuple
from decimal import Decimal

from django.db.models import Q

from .models import Node

GIB = 1 << 30
MIB = 1 << 20
LIVE = ~Q(actual_state="destroyed")
SLACK = 1e-9  # float sums of use: "exactly at the limit" still fits


class NoCapacity(Exception):
    """No online node fits; the message says what ran out where."""


Demand = namedtuple("Demand", "ram swap cpu disk")  # what a VE is sold: bytes, bytes, CPUs, bytes
Use = namedtuple("Use", "ram cpu")  # what it is expected to use: bytes, CPUs busy


def demand(plan, node_cpus):
    """What one VE of ``plan`` takes from a node: bytes, bytes, CPUs, bytes."""
    cpus = plan.cpus or node_cpus
    if plan.cpu_limit_pct:
        cpus = min(cpus, Decimal(plan.cpu_limit_pct) / 100)
    return Demand(plan.ram_mb * MIB, plan.swap_mb * MIB, Decimal(cpus), plan.disk_gib * GIB)


LiveVE = namedtuple("LiveVE", "pk plan node_id")  # what placement reads of a VE


def live_ves(nodes):
    """{node pk: [LiveVE]} of the live VEs on ``nodes`` (pks), in one query of bare
    columns and one of plans: a fleet of 10,000 VEs builds no model instances."""
    from hosting.plans.models import Plan
    rows = list(_live_rows().filter(node_id__in=list(nodes)))
    plans = Plan.objects.in_bulk({plan_id for _, plan_id, _ in rows})
    out = {pk: [] for pk in nodes}
    for pk, plan_id, node_id in rows:
        out[node_id].append(LiveVE(pk, plans[plan_id], node_id))
    return out


def _live_rows():
    from hosting.environments.models import VirtualEnvironment as VE
    return VE.objects.filter(LIVE).order_by("veid").values_list("pk", "plan_id", "node_id")


def sold(node, ves=None):
    """Sum of the demands of the node's live VEs (``ves``, as ``live_ves`` gives them,
    if the caller has them)."""
    return _sum_demands(node, live_ves([node.pk])[node.pk] if ves is None else ves)


def _sum_demands(node, ves):
    # Per plan, times its count: the same sums (ints and Decimals add exactly).
    count = Counter(ve.plan for ve in ves)
    total = Demand(0, 0, Decimal(0), 0)
    for plan, n in count.items():
        total = Demand(*(a + b * n for a, b in zip(total, demand(plan, node.cpus))))
    return total


def capacity(node):
    """What the node may sell: physical size times the overcommit ratio."""
    return Demand(int(node.ram_bytes * node.ram_overcommit),
                  int(node.ram_bytes * node.swap_overcommit),
                  Decimal(node.cpus) * node.cpu_overcommit,
                  int(node.disk_bytes * node.disk_overcommit))


class Room:
    """One node as placement sees it: sold and capacity, expected use and its limit."""

    def __init__(self, node, profile, ves=None):
        """``ves``: the node's live VEs (anything with ``pk`` and ``plan``), else read."""
        self.node = node
        ves = live_ves([node.pk])[node.pk] if ves is None else ves
        self.ve_count = len(ves)
        self.capacity, self.sold = capacity(node), _sum_demands(node, ves)
        self.profile = profile
        load = profile.nodes.get(node.pk)
        measured = load.measured if load else frozenset()
        use = Use(load.ram_p95 or 0.0, load.cpu_p95 or 0.0) if load else Use(0.0, 0.0)
        expected = {}  # per plan: the same floats, added in the same order
        for ve in ves:
            if ve.pk not in measured:
                if ve.plan.pk not in expected:
                    expected[ve.plan.pk] = self.expect(ve.plan)
                use = _plus(use, expected[ve.plan.pk])
        self.use = use
        risk = node.risk_pct / 100
        self.limit = Use(node.ram_bytes * risk, node.cpus * risk)

    def expect(self, plan):
        """The use expected of one VE of ``plan`` here (see the module's docstring)."""
        need = demand(plan, self.node.cpus)
        observed = self.profile.plans.get(plan.pk)
        risk = self.node.risk_pct / 100
        ram_share = observed.ram_share if observed else risk / float(self.node.ram_overcommit)
        cpu_share = observed.cpu_share if observed else risk / float(self.node.cpu_overcommit)
        return Use(need.ram * ram_share, float(need.cpu) * cpu_share)

    def want(self, plan):
        """(Demand, Use) of one more VE of ``plan`` here."""
        return demand(plan, self.node.cpus), self.expect(plan)

    def lacking(self, need, expect):
        """What the node lacks for a VE of ``need`` sold and ``expect`` use (empty = fits)."""
        names = [name for name, have, used, more in zip(Demand._fields, self.capacity,
                                                        self.sold, need) if used + more > have]
        # Use past the risk level is named only where sales did not already run out.
        names += [f"{name} headroom" for name, limit, used, more in zip(
            Use._fields, self.limit, self.use, expect)
            if used + more > limit * (1 + SLACK) and name not in names]
        return names

    def take(self, need, expect):
        """Count one more VE of ``need`` and ``expect`` as placed here."""
        self.sold = Demand(*(a + b for a, b in zip(self.sold, need)))
        self.use = _plus(self.use, expect)
        self.ve_count += 1

    def give_back(self, need, expect):
        """Count a VE of ``need`` and ``expect`` as gone from here (moved away)."""
        self.sold = Demand(*(a - b for a, b in zip(self.sold, need)))
        self.use = Use(*(a - b for a, b in zip(self.use, expect)))
        self.ve_count -= 1

    def over(self):
        """The resources whose expected use is past the risk level ("ram", "cpu")."""
        return [name for name, limit, used in zip(Use._fields, self.limit, self.use)
                if used > limit * (1 + SLACK)]

    def fits(self, plan):
        """How many more VEs of ``plan`` fit here (placing them one by one gives the same)."""
        need, expect = self.want(plan)
        # Sales in exact arithmetic (ints and Decimals, as ``lacking`` compares them);
        # use in floats with the same slack.
        counts = [(have - used) // more for have, used, more in
                  zip(self.capacity, self.sold, need) if more]
        counts += [math.floor((limit * (1 + SLACK) - used) / more) for limit, used, more in
                   zip(self.limit, self.use, expect) if more]
        return max(0, int(min(counts))) if counts else 0

    def summary(self):
        """Ratios and headroom: sold/physical per resource, expected use/physical, limit-use."""
        node = self.node
        return {"node": node.name, "ves": self.ve_count,
                "ram_overcommit": ratio(self.sold.ram, node.ram_bytes),
                "cpu_overcommit": ratio(float(self.sold.cpu), node.cpus),
                "disk_overcommit": ratio(self.sold.disk, node.disk_bytes),
                "ram_use": ratio(self.use.ram, node.ram_bytes),
                "cpu_use": ratio(self.use.cpu, node.cpus),
                "headroom_ram": self.limit.ram - self.use.ram,
                "headroom_cpu": self.limit.cpu - self.use.cpu}

    def _rank(self, need, expect):
        return (-(self.limit.ram - self.use.ram - expect.ram),
                -float(self.capacity.ram - self.sold.ram - need.ram), self.node.name)


class Fleet:
    """Rooms of several nodes; places VEs one after the other."""

    def __init__(self, nodes, profile=None):
        if profile is None:
            # The stored copy only: capacity.py, which measures it, imports this module.
            from hosting.usage import load as measured
            profile = measured.stored()
        self.profile = profile
        ves = live_ves([node.pk for node in nodes])
        self.rooms = [Room(node, profile, ves[node.pk]) for node in nodes]

    @classmethod
    def online(cls, profile=None, exclude=None):
        nodes = Node.objects.filter(state=Node.State.ONLINE)
        if exclude is not None:
            nodes = nodes.exclude(pk=exclude.pk)
        return cls(list(nodes), profile)

    def choose(self, want, what):
        """The best Room for a VE; ``want(room)`` gives its (Demand, Use) there.

        Raise NoCapacity naming what each node lacks (``what`` names the VE).
        """
        candidates, reasons = [], {}
        for room in self.rooms:
            need, expect = want(room)
            lacking = room.lacking(need, expect)
            if lacking:
                reasons[room.node.name] = lacking
            else:
                candidates.append((room._rank(need, expect), room))
        if candidates:
            return min(candidates, key=lambda c: c[0])[1]
        if not reasons:
            raise NoCapacity("no node is online")
        detail = "; ".join(f"{name}: no {', '.join(lacks)} left"
                           for name, lacks in sorted(reasons.items()))
        raise NoCapacity(f"no online node fits {what} ({detail})")

    def place(self, want, what):
        """Choose a Room for a VE and count it there; return the Room."""
        room = self.choose(want, what)
        room.take(*want(room))
        return room

    def place_plan(self, plan):
        return self.place(lambda room: room.want(plan), f"plan {plan.name}")


def choose_node(plan):
    """Return the online node a new VE of ``plan`` goes to (the module's rule).

    Raise NoCapacity naming what ran out when no online node fits.
    """
    return Fleet.online().choose(lambda room: room.want(plan), f"plan {plan.name}").node


def shortfall(node, plan):
    """Return what ``node`` lacks for one more VE of ``plan`` (empty = fits)."""
    room = Fleet([node]).rooms[0]
    return room.lacking(*room.want(plan))


def _plus(use, more):
    return Use(use.ram + more.ram, use.cpu + more.cpu)


def ratio(part, whole):
    """``part / whole``, None when either is unknown or the whole is 0."""
    return part / whole if part is not None and whole else None


def change_shortfall(node, old_plan, new_plan, room=None):
    """What ``node`` lacks for one of its VEs to move from ``old_plan`` to ``new_plan``
    (empty = fits); ``room``: the node's Room if the caller has it (a list of plans
    asks once per plan).

    The same rule as for a new VE, counting only the difference: a resource
    the change does not grow is never named, so a smaller plan always fits,
    even on a node already sold past its limits.
    """
    room = room or Fleet([node]).rooms[0]
    (need_new, use_new), (need_old, use_old) = room.want(new_plan), room.want(old_plan)
    need = Demand(*(new - old for new, old in zip(need_new, need_old)))
    expect = Use(*(new - old for new, old in zip(use_new, use_old)))
    grows = {name for name, more in zip(Demand._fields, need) if more > 0}
    grows |= {f"{name} headroom" for name, more in zip(Use._fields, expect) if more > 0}
    return [name for name in room.lacking(need, expect) if name in grows]
