"""Rebalancing (hosting/nodes/rebalance.py): the plan that brings nodes back under their
risk level, applied now or in a maintenance window, run a few moves at a time. Moves
are simulated here (test_moves_live.py makes real ones)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from rest_framework.test import APIClient
from django.utils import timezone

from hosting.core.errors import Conflict, Forbidden
from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes import rebalance
from hosting.nodes.models import Node, Rebalance
from hosting.operations.models import Operation
from hosting.plans.models import Plan
from tests.hosting.test_evacuation import _finish_moves, crowded  # noqa: F401
from tests.hosting.test_moves import fleet  # noqa: F401
from tests.staffing import make_staff, verified_login


@pytest.fixture
def hot(crowded):  # noqa: F811
    """hn1 past its risk level: its two XL VPSes are expected to use 3.2 GiB each (at
    its RAM ratio 0.5 an unmeasured plan counts at 160% of its RAM) against 6.4 GiB."""
    Node.objects.filter(name="hn1").update(ram_overcommit=Decimal("0.5"))
    xl = Plan.objects.get(name="XL")
    VE.objects.create(veid=4300, hostname="xl2.example.com", owner=crowded["customer"],
                      plan=xl, node=crowded["hn1"], template=crowded["template"],
                      actual_state="running", desired_state="running")
    return crowded


@pytest.mark.django_db
def test_the_plan_moves_the_fewest_biggest_vpses_that_bring_the_node_under(hot):
    plan = rebalance.plan()
    assert plan["over"] == ["hn1"] and plan["unsolved"] == []
    assert [(m["veid"], m["from"], m["to"]) for m in plan["moves"]] == [(4202, "hn1", "hn2")]
    after = {row["node"]: row["after"] for row in plan["nodes"]}
    assert after["hn1"]["headroom_ram"] >= 0 and after["hn2"]["headroom_ram"] >= 0
    assert after["hn1"]["ves"] == 5 and after["hn2"]["ves"] == 1


@pytest.mark.django_db
def test_the_plan_says_when_no_move_can_help(hot):
    Node.objects.filter(name="hn2").update(templates=[])  # it cannot take any of them
    plan = rebalance.plan()
    assert plan["moves"] == []
    assert len(plan["unsolved"]) == 1 and "node hn1 stays over its 80% risk level (RAM by" \
        in plan["unsolved"][0]
    with pytest.raises(Conflict, match="nothing to move"):
        rebalance.apply(hot["admin"])


@pytest.mark.django_db
def test_nothing_to_do_when_every_node_is_within_its_risk_level(crowded):
    assert rebalance.plan()["over"] == [] and rebalance.plan()["moves"] == []
    with pytest.raises(Conflict, match="nothing to move"):
        rebalance.apply(crowded["admin"])


@pytest.mark.django_db
def test_applied_now_the_moves_run_and_the_rebalance_ends(hot,
                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        batch = rebalance.apply(hot["admin"], parallel=2)
    batch.refresh_from_db()
    assert batch.state == "running" and len(batch.moves) == 1
    op = Operation.objects.get(kind="migrate")
    assert op.params["to"] == "hn2" and op.environment.veid == 4202
    assert rebalance.plan()["moves"] == []  # a move under way counts as done
    _finish_moves()
    rebalance.step(batch)
    batch.refresh_from_db()
    assert batch.state == "done" and rebalance.plan()["over"] == []
    assert [row["state"] for row in rebalance.progress(batch)] == ["succeeded"]


@pytest.mark.django_db
def test_a_rebalance_scheduled_for_a_window_plans_and_runs_then(hot):
    later = timezone.now() + timedelta(hours=3)
    batch = rebalance.apply(hot["admin"], run_at=later, parallel=1)
    assert batch.state == "scheduled" and batch.moves == []
    rebalance.step_all()
    assert not Operation.objects.exists()
    Rebalance.objects.filter(pk=batch.pk).update(run_at=timezone.now() - timedelta(seconds=1))
    rebalance.step_all()
    batch.refresh_from_db()
    assert batch.state == "running" and [m["veid"] for m in batch.moves] == [4202]
    assert Operation.objects.get().params["to"] == "hn2"
    rebalance.cancel(batch, hot["admin"])
    with pytest.raises(Conflict):
        rebalance.cancel(batch, hot["admin"])


@pytest.mark.django_db
def test_only_administrators_rebalance_and_the_page_shows_the_plan(hot):
    with pytest.raises(Forbidden):
        rebalance.apply(make_staff("helper", role="support"))
    auditor = Client()
    verified_login(auditor, make_staff("looker", role="auditor"))
    html = auditor.get("/staff/reports/overcommit/").content.decode()
    assert 'id="rebalance-moves"' in html and 'id="rebalance-form"' not in html
    assert auditor.post("/staff/reports/overcommit/rebalance/").status_code == 403
    admin = Client()
    verified_login(admin, hot["admin"])
    assert 'id="rebalance-form"' in admin.get("/staff/reports/overcommit/").content.decode()
    assert admin.post("/staff/reports/overcommit/rebalance/",
                      {"run_at": "not a time"}).status_code == 302
    assert not Rebalance.objects.exists()
    assert admin.post("/staff/reports/overcommit/rebalance/",
                      {"parallel": "1"}).status_code == 302
    assert Rebalance.objects.get().moves[0]["veid"] == 4202
    html = admin.get("/staff/reports/overcommit/").content.decode()
    assert 'class="rebalance" data-state="scheduled"' in html  # the beat begins it


@pytest.mark.django_db
def test_the_api_gives_the_plan_to_report_viewers_and_applies_it_for_administrators(hot):
    api = APIClient()
    api.force_authenticate(hot["user"])
    assert api.get("/api/v1/rebalances/plan/").status_code == 403  # customers: no
    api.force_authenticate(make_staff("looker", role="auditor"))
    plan = api.get("/api/v1/rebalances/plan/").json()
    assert [m["veid"] for m in plan["moves"]] == [4202]
    assert api.post("/api/v1/rebalances/", {}, format="json").status_code == 403
    api.force_authenticate(hot["admin"])
    assert api.post("/api/v1/rebalances/", {"parallel": 9}, format="json").status_code == 400
    assert api.post("/api/v1/rebalances/", {"run_at": "soon"},
                    format="json").status_code == 400
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    made = api.post("/api/v1/rebalances/", {"run_at": later, "parallel": 1}, format="json")
    assert made.status_code == 201 and made.json()["state"] == "scheduled"
    cancel = api.post(f"/api/v1/rebalances/{made.json()['id']}/cancel/")
    assert cancel.status_code == 200 and cancel.json()["state"] == "cancelled"
    assert api.post(f"/api/v1/rebalances/{made.json()['id']}/cancel/").status_code == 409
