"""Evacuating a node (hosting/nodes/evacuation.py): moves queued a few at a time, biggest
VPS first, to nodes that can take them; what cannot move is named; the node ends
draining and empty. The moves are simulated here (test_moves_live.py makes real ones)."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from hosting.core.errors import Conflict, Forbidden
from hosting.core.models import AuditLog
from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes import evacuation
from hosting.nodes.models import Node
from hosting.operations.models import Operation
from hosting.plans.models import Plan
from tests.hosting.test_moves import fleet  # noqa: F401
from tests.staffing import make_staff, verified_login


@pytest.fixture
def crowded(fleet, catalogue):  # noqa: F811
    """hn1 with five VPSes (one of a big plan), hn2 able to take them."""
    big = Plan.objects.create(name="XL", ram_mb=2048, swap_mb=0, cpus=2, processes=64,
                              monthly_price=10)
    ves = [fleet["ve"]]
    for n in range(4):
        ves.append(VE.objects.create(
            veid=4200 + n, hostname=f"v{n}.example.com", owner=catalogue["customer"],
            plan=big if n == 2 else catalogue["plan"], node=fleet["hn1"],
            template=catalogue["template"], actual_state="stopped", desired_state="stopped"))
    return {**fleet, "ves": ves, "admin": make_staff("root-admin")}


def _finish_moves(state="succeeded", error=""):
    """What the nodes would do with the queued moves: done (the VPS is at the target) or
    failed (it stays)."""
    for op in Operation.objects.filter(kind="migrate", state="queued"):
        if state == "succeeded":
            VE.objects.filter(pk=op.environment_id).update(
                node=Node.objects.get(name=op.params["to"]))
        Operation.objects.filter(pk=op.pk).update(state=state, error=error)


@pytest.mark.django_db
def test_an_evacuation_moves_every_vps_a_few_at_a_time_and_leaves_the_node_empty(
        crowded, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        node = evacuation.start(crowded["hn1"], crowded["admin"], parallel=2)
    assert node.state == "draining"
    queued = Operation.objects.filter(kind="migrate", state="queued")
    assert queued.count() == 2
    assert 4202 in set(queued.values_list("environment__veid", flat=True))  # biggest first
    evacuation.step(node)  # nothing new while two run
    assert Operation.objects.filter(kind="migrate").count() == 2
    rows = {row["veid"]: row["state"] for row in evacuation.progress(node)}
    assert sorted(rows.values()).count("queued") == 2 and sorted(rows.values()).count(
        "waiting") == 3
    for _ in range(3):
        _finish_moves()
        evacuation.step(node)
    node.refresh_from_db()
    assert not node.environments.live().exists()
    assert node.evacuation["finished"] and node.state == "draining"
    assert VE.objects.filter(node__name="hn2").count() == 5
    assert AuditLog.objects.filter(action="node.evacuate").exists()


@pytest.mark.django_db
def test_a_vps_that_cannot_move_is_named_and_the_others_go_on(crowded,
                                                                django_capture_on_commit_callbacks):
    crowded["ves"][1].addresses.all().delete()
    crowded["v4"].nodes.remove(crowded["hn2"])  # the first VPS's address cannot go to hn2
    with django_capture_on_commit_callbacks(execute=True):
        node = evacuation.start(crowded["hn1"], crowded["admin"], parallel=3)
    node.refresh_from_db()
    assert "does not serve pool v4" in node.evacuation["stuck"][str(crowded["ve"].veid)]
    _finish_moves(state="failed", error="criu: boom")
    evacuation.step(node)
    node.refresh_from_db()
    stuck = node.evacuation["stuck"]
    assert len(stuck) == 4 and all("its move failed: criu: boom" in why for veid, why in
                                   stuck.items() if veid != str(crowded["ve"].veid))
    states = {row["veid"]: row["state"] for row in evacuation.progress(node)}
    assert states[crowded["ve"].veid] == "stuck"
    assert Operation.objects.filter(kind="migrate", state="queued").count() == 1  # the last
    evacuation.step(node)  # nothing retried within this evacuation
    assert Operation.objects.filter(kind="migrate").count() == 4
    evacuation.stop(node, crowded["admin"])
    node.refresh_from_db()
    assert node.evacuation["stopped"] and node.state == "draining"
    _finish_moves()
    with django_capture_on_commit_callbacks(execute=True):  # and staff may try again
        evacuation.start(node, crowded["admin"], parallel=1)
    assert Operation.objects.filter(kind="migrate", state="queued").count() == 1


@pytest.mark.django_db
def test_only_administrators_evacuate_and_twice_is_refused(crowded):
    with pytest.raises(Forbidden):
        evacuation.start(crowded["hn1"], make_staff("helper", role="support"))
    api = APIClient()
    url = f"/api/v1/nodes/{crowded['hn1'].pk}/evacuate/"
    api.force_authenticate(make_staff("auditor", role="auditor"))
    assert api.post(url, {}, format="json").status_code == 403
    api.force_authenticate(crowded["admin"])
    assert api.post(url, {"parallel": 0}, format="json").status_code == 400
    assert api.post(url, {"parallel": 50}, format="json").status_code == 400
    answer = api.post(url, {"parallel": 1}, format="json")
    assert answer.status_code == 202 and answer.json()["state"] == "draining"
    assert api.post(url, {}, format="json").status_code == 409
    with pytest.raises(Conflict):
        evacuation.start(crowded["hn1"], crowded["admin"])
    stop = api.post(f"/api/v1/nodes/{crowded['hn1'].pk}/stop-evacuation/")
    assert stop.status_code == 200 and stop.json()["evacuation"]["stopped"] is True


@pytest.mark.django_db
def test_the_node_page_starts_an_evacuation_and_shows_each_vps(crowded):
    page = Client()
    verified_login(page, crowded["admin"])
    url = f"/staff/nodes/{crowded['hn1'].pk}/"
    assert 'id="evacuate-form"' in page.get(url).content.decode()
    assert page.post(url + "evacuate/", {"parallel": "abc"}).status_code == 302
    assert not Operation.objects.exists()
    assert page.post(url + "evacuate/", {"parallel": "2"}).status_code == 302
    html = page.get(url).content.decode()
    assert 'id="evacuation-progress"' in html and "mover.example.com" in html
    assert 'id="btn-evacuate-stop"' in html
