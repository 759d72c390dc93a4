"""Rebalancing and evacuation on three nodes with measured usage (hourly rollups, as
the node workers' sampling leaves them): the recommended moves bring every node under
its risk level, and once they are made (here: recorded as the migrate operations would)
the measurement agrees. Placement's rule decides, on the VPSes' own p95."""

import pytest

from hosting.nodes import evacuation, rebalance
from hosting.nodes.models import Node
from hosting.operations.models import Operation
from hosting.usage import capacity
from tests.hosting.test_evacuation import _finish_moves
from tests.hosting.test_moves import _identity
from tests.hosting.test_placement import GIB, measured, node, place, plan
from tests.staffing import make_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def three():
    """hot (8 GiB) uses 8 GiB, warm (8 GiB) 7 GiB, cold (8 GiB) nothing; each may use
    80% (6.4 GiB). Sales allow all of it (RAM ratio 3)."""
    nodes = {name: _identity(node(name, ram_gib=8, cpus=8, ram_overcommit=3), n)
             for n, name in enumerate(("hot", "warm", "cold"), start=1)}
    s, m = plan("S", ram_mb=2048), plan("M", ram_mb=4096)
    for veid in range(100, 104):
        measured(place(nodes["hot"], s, veid), ram=2 * GIB)
    measured(place(nodes["warm"], m, 200), ram=4 * GIB)
    measured(place(nodes["warm"], m, 201), ram=3 * GIB)
    capacity.refresh()
    return nodes


def _remeasured_over():
    """The nodes over their risk level once the moved VPSes' history counts at their
    new nodes."""
    capacity.refresh()
    return rebalance.plan()["over"]


def test_the_plan_moves_one_vps_off_each_node_over_and_that_is_enough(three):
    plan_now = rebalance.plan()
    assert sorted(plan_now["over"]) == ["hot", "warm"] and plan_now["unsolved"] == []
    moves = {(m["veid"], m["from"], m["to"]) for m in plan_now["moves"]}
    assert moves == {(200, "warm", "cold"), (100, "hot", "cold")}  # biggest first, 2 moves
    after = {row["node"]: row["after"] for row in plan_now["nodes"]}
    assert all(row["headroom_ram"] >= 0 for row in after.values())
    with pytest.MonkeyPatch.context() as nothing_sent:
        nothing_sent.setattr("hosting.operations.dispatch.on_commit", lambda op: None)
        batch = rebalance.apply(make_staff("root-admin"), parallel=4)
        rebalance.step(batch)
    assert Operation.objects.filter(kind="migrate", state="queued").count() == 2
    _finish_moves()
    rebalance.step(batch)
    batch.refresh_from_db()
    assert batch.state == "done"
    assert _remeasured_over() == []


def test_evacuating_the_hot_node_moves_what_fits_within_the_risk_levels_and_names_the_rest(
        three):
    with pytest.MonkeyPatch.context() as nothing_sent:
        nothing_sent.setattr("hosting.operations.dispatch.on_commit", lambda op: None)
        evacuation.start(three["hot"], make_staff("root-admin"), parallel=8)
        evacuation.step(three["hot"])
    targets = [op.params["to"] for op in Operation.objects.filter(kind="migrate")]
    # warm is past its risk level already: only cold takes any, three of them (6 GiB).
    assert targets == ["cold"] * 3, targets
    _finish_moves()
    with pytest.MonkeyPatch.context() as nothing_sent:
        nothing_sent.setattr("hosting.operations.dispatch.on_commit", lambda op: None)
        evacuation.step(three["hot"])
    hot = Node.objects.get(name="hot")
    assert hot.environments.count() == 1 and not hot.evacuation.get("finished")
    stuck = hot.evacuation["stuck"]
    assert list(stuck) == ["103"], stuck
    assert "no online node fits VPS ve103 (cold: no ram headroom left; warm: no ram " \
        "headroom left)" == stuck["103"], stuck
    assert _remeasured_over() == ["warm"]  # as before: the evacuation put no node over
