"""The measured load placement reads: the Profile type and the last stored one.

Its own module so that placement (hosting/nodes/placement.py) can read what
capacity.py stored without importing capacity.py, which measures with
placement's ``demand``: the two would import each other.
"""

from collections import namedtuple

from .models import NodeLoad, PlanLoad

PLACEMENT_DAYS = 30

NodeUse = namedtuple("NodeUse", "ram_p95 cpu_p95 measured")  # measured: VE pks in the p95
PlanUse = namedtuple("PlanUse", "ram_share cpu_share measured")  # only for measured plans
# nodes: {node pk: NodeUse}, plans: {plan pk: PlanUse}
Profile = namedtuple("Profile", "nodes plans computed_at days")
EMPTY = Profile({}, {}, None, PLACEMENT_DAYS)


def stored():
    """The Profile ``capacity.refresh`` stored last (EMPTY before the first)."""
    node_rows, plan_rows = list(NodeLoad.objects.all()), list(PlanLoad.objects.all())
    if not node_rows:
        return EMPTY  # no VE measured yet: plans' shares need measured VEs too
    return Profile({row.node_id: NodeUse(row.ram_p95, row.cpu_p95, frozenset(row.measured))
                    for row in node_rows},
                   {row.plan_id: PlanUse(row.ram_share, row.cpu_share, row.measured)
                    for row in plan_rows},
                   node_rows[0].computed_at, node_rows[0].days)
