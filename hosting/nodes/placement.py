"""Placement: which online node can take one more VE of a plan.

A node sells each resource up to its physical size times its overcommit
ratio for that resource. What is "sold" is the sum over the node's live VEs
of their plans' limits. The same rule answers real orders and (later) the
what-if reports.
"""

from collections import namedtuple
from decimal import Decimal

from django.db.models import Q

from .models import Node

GIB = 1 << 30
MIB = 1 << 20
LIVE = ~Q(actual_state="destroyed")


class NoCapacity(Exception):
    """No online node fits the plan; the message says what ran out."""


Demand = namedtuple("Demand", "ram swap cpu disk")


def demand(plan, node_cpus):
    """What one VE of ``plan`` takes from a node: bytes, bytes, CPUs, bytes."""
    cpus = plan.cpus or node_cpus
    if plan.cpu_limit_pct:
        cpus = min(cpus, Decimal(plan.cpu_limit_pct) / 100)
    return Demand(plan.ram_mb * MIB, plan.swap_mb * MIB, Decimal(cpus), plan.disk_gib * GIB)


def sold(node):
    """Sum of the demands of the node's live VEs."""
    total = Demand(0, 0, Decimal(0), 0)
    for ve in node.environments.filter(LIVE).select_related("plan"):
        one = demand(ve.plan, node.cpus)
        total = Demand(*(a + b for a, b in zip(total, one)))
    return total


def capacity(node):
    """What the node may sell: physical size times the overcommit ratio."""
    return Demand(int(node.ram_bytes * node.ram_overcommit),
                  int(node.ram_bytes * node.swap_overcommit),
                  Decimal(node.cpus) * node.cpu_overcommit,
                  int(node.disk_bytes * node.disk_overcommit))


def headroom(node, plan):
    """Return what the node has left after one more VE of ``plan`` (negative = lacking)."""
    need, have, used = demand(plan, node.cpus), capacity(node), sold(node)
    return Demand(*(h - u - n for n, h, u in zip(need, have, used)))


def shortfall(node, plan):
    """Return the resources the node lacks for one more VE of ``plan`` (empty = fits)."""
    return [name for name, left in headroom(node, plan)._asdict().items() if left < 0]


def choose_node(plan):
    """Return the online node with the most RAM left after placing ``plan``.

    Raise NoCapacity naming what ran out when no online node fits.
    """
    candidates, reasons = [], {}
    for node in Node.objects.filter(state=Node.State.ONLINE):
        left = headroom(node, plan)
        lacking = [name for name, value in left._asdict().items() if value < 0]
        if lacking:
            reasons[node.name] = lacking
        else:
            candidates.append((left.ram, node.name, node))
    if candidates:
        return max(candidates)[2]
    if not reasons:
        raise NoCapacity("no node is online")
    detail = "; ".join(f"{name}: no {', '.join(what)} left" for name, what in sorted(reasons.items()))
    raise NoCapacity(f"no online node fits plan {plan.name} ({detail})")
