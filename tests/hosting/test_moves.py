"""Asking for a VPS to move to another node: who may, which nodes can take it, what the
customer sees, and how nodes come to trust each other (hosting/nodes/moves.py, peers.py).

The move itself, on real nodes, is in test_moves_live.py.
"""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from hosting.core.errors import Conflict, Forbidden
from hosting.environments.models import VirtualEnvironment as VE
from hosting.ipam.models import IPAddress
from hosting.nodes import moves, peers
from hosting.nodes.models import Node
from hosting.operations.models import Operation
from tests.staffing import make_staff, verified_login

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{}"


def _key(n):
    return KEY.format(chr(ord("A") + n) * 43)


def _identity(node, n):
    node.migrate_address = f"198.18.255.{n}:2222"
    node.migrate_key, node.migrate_host_key = _key(n), _key(n + 10)
    node.templates = ["busybox"]
    node.save()
    return node


@pytest.fixture
def fleet(catalogue):
    """The catalogue's node hn1 with a VPS on it, and hn2 able to take it."""
    hn1 = _identity(catalogue["node"], 1)
    hn2 = _identity(Node.objects.create(name="hn2", state="online", ram_bytes=8 << 30, cpus=4,
                                        disk_bytes=500 << 30), 2)
    for pool in (catalogue["v4"], catalogue["v6"]):
        pool.nodes.add(hn2)
    ve = VE.objects.create(veid=4101, hostname="mover.example.com", owner=catalogue["customer"],
                           plan=catalogue["plan"], node=hn1, template=catalogue["template"],
                           actual_state="running", desired_state="running")
    IPAddress.objects.create(pool=catalogue["v4"], address="198.18.5.2", environment=ve)
    return {**catalogue, "hn1": hn1, "hn2": hn2, "ve": ve}


@pytest.mark.django_db
def test_an_administrator_moves_a_vps_to_a_named_or_the_best_node(fleet,
                                                                   django_capture_on_commit_callbacks):
    admin = make_staff("root-admin")
    with django_capture_on_commit_callbacks(execute=False) as sent:
        op = moves.request(fleet["ve"], admin, "hn2", offline=True)
    assert len(sent) == 1 and op.kind == "migrate" and op.state == "queued"
    assert op.params == {"to": "hn2", "from": "hn1", "offline": True}
    op.delete()
    with django_capture_on_commit_callbacks(execute=False):
        op = moves.request(fleet["ve"], admin)  # the best node: the only other one
    assert op.params["to"] == "hn2" and op.params["offline"] is False
    # One move at a time.
    with pytest.raises(Conflict, match="busy"):
        moves.request(fleet["ve"], admin, "hn2")


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["support", "billing", "auditor"])
def test_only_administrators_move_vpses(fleet, role):
    with pytest.raises(Forbidden):
        moves.request(fleet["ve"], make_staff(f"s-{role}", role=role), "hn2")
    with pytest.raises(Forbidden):
        moves.request(fleet["ve"], fleet["user"], "hn2")  # its owner neither
    assert not Operation.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("spoil, why", [
    (lambda f: None, "on hn1 already"),
    (lambda f: Node.objects.filter(name="hn2").update(state="draining"), "hn2 is draining"),
    (lambda f: Node.objects.filter(name="hn2").update(migrate_address=""),
     "no migration address"),
    (lambda f: Node.objects.filter(name="hn1").update(migrate_key=""), "no migration key"),
    (lambda f: Node.objects.filter(name="hn2").update(templates=["debian-12"]),
     "does not have OS template busybox"),
    (lambda f: f["v4"].nodes.remove(f["hn2"]), "does not serve pool v4 (198.18.5.2)"),
    (lambda f: Node.objects.filter(name="hn2").update(ram_bytes=1 << 20), "no ram"),
])
def test_a_node_that_cannot_take_the_vps_is_refused_with_the_reason(fleet, spoil, why):
    spoil(fleet)
    ve = VE.objects.get(pk=fleet["ve"].pk)
    target = "hn1" if why.endswith("already") else "hn2"
    with pytest.raises(Conflict, match=why.replace("(", r"\(").replace(")", r"\)")):
        moves.request(ve, make_staff("root-admin"), target)
    if not why.endswith("already"):
        with pytest.raises(Conflict, match="no node can take|no online node fits"):
            moves.request(ve, make_staff("root-admin2"))  # no best node either
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_the_api_moves_for_administrators_only_and_answers_bad_requests_cleanly(fleet):
    api = APIClient()
    url = f"/api/v1/environments/{fleet['ve'].veid}/migrate/"
    api.force_authenticate(fleet["user"])
    assert api.post(url, {"node": "hn2"}, format="json").status_code == 403
    api.force_authenticate(make_staff("root-admin"))
    assert api.post(url, {"node": "nosuch"}, format="json").status_code == 400
    assert api.post(url, {"node": "hn1"}, format="json").status_code == 409
    assert api.post(url, {"node": "x" * 200}, format="json").status_code == 400
    assert not Operation.objects.exists()
    answer = api.post(url, {}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.json()["kind"] == "migrate"
    assert Operation.objects.get().params["to"] == "hn2"


@pytest.mark.django_db
def test_the_owner_reads_what_a_failed_move_means_never_the_nodes(fleet):
    Operation.objects.create(environment=fleet["ve"], kind="migrate", state="failed",
                             params={"to": "hn2", "from": "hn1"},
                             error="migration failed: 198.18.255.2:2222: no route",
                             error_code="migration_failed")
    api = APIClient()
    api.force_authenticate(fleet["user"])
    seen = api.get("/api/v1/operations/").json()["results"][0]
    assert seen["error"] == ("the move to another host did not happen; the VPS stays "
                             "where it was")
    assert seen["error_code"] == "migration_failed"
    page = Client()
    page.force_login(fleet["user"])
    html = page.get(f"/vps/{fleet['ve'].veid}/").content.decode()
    assert "198.18.255.2" not in html and "the move to another host did not happen" in html
    assert 'id="migrate-form"' not in html
    api.force_authenticate(make_staff("root-admin"))
    assert "no route" in api.get("/api/v1/operations/").json()["results"][0]["error"]


@pytest.mark.django_db
def test_a_done_move_shows_its_figures_to_staff_and_its_downtime_to_the_owner(fleet):
    result = {"mode": "live", "why_offline": None, "downtime_s": 0.71, "total_s": 1.52,
              "precopy_s": 0.6, "phases_s": {"checkpoint": 0.3}, "sent": {"disk": 1}}
    Operation.objects.create(environment=fleet["ve"], kind="migrate", state="succeeded",
                             params={"to": "hn2", "from": "hn1", "result": result})
    Operation.objects.create(environment=fleet["ve"], kind="start", state="succeeded")
    api = APIClient()
    api.force_authenticate(fleet["user"])
    seen = {op["kind"]: op for op in api.get("/api/v1/operations/").json()["results"]}
    assert seen["migrate"]["move"] == {"mode": "live", "downtime_s": 0.71}  # no node names
    assert seen["start"]["move"] is None
    api.force_authenticate(make_staff("root-admin"))
    staff_seen = api.get("/api/v1/operations/?kind=migrate").json()["results"][0]["move"]
    assert staff_seen == {"mode": "live", "downtime_s": 0.71, "from": "hn1", "to": "hn2",
                          "why_offline": None, "total_s": 1.52, "precopy_s": 0.6,
                          "phases_s": {"checkpoint": 0.3}}


@pytest.mark.django_db
def test_the_staff_page_offers_the_nodes_that_can_take_it_and_says_why_not_others(fleet):
    Node.objects.create(name="hn3", state="offline")
    page = Client()
    verified_login(page, make_staff("root-admin"))
    html = page.get(f"/vps/{fleet['ve'].veid}/").content.decode()
    assert 'id="migrate-form"' in html and '<option value="hn2">' in html
    assert 'value="hn3"' not in html and "node hn3 is offline" in html
    answer = page.post(f"/staff/vps/{fleet['ve'].veid}/migrate/", {"node": "hn3"})
    assert answer.status_code == 302 and not Operation.objects.exists()
    answer = page.post(f"/staff/vps/{fleet['ve'].veid}/migrate/", {"node": "hn2"})
    assert answer.status_code == 302 and Operation.objects.get().params["to"] == "hn2"
    support = Client()
    verified_login(support, make_staff("helper", role="support"))
    assert 'id="migrate-form"' not in support.get(f"/vps/{fleet['ve'].veid}/").content.decode()
    assert support.post(f"/staff/vps/{fleet['ve'].veid}/migrate/",
                        {"node": "hn2"}).status_code == 403


@pytest.mark.django_db
def test_a_node_reports_its_identity_and_trusts_exactly_the_other_nodes(catalogue, engine,
                                                                         settings):
    settings.MIGRATE_ADDRESS = "198.18.255.1:2222"
    hn2 = _identity(Node.objects.create(name="hn2"), 2)
    bad = Node.objects.create(name="hn3", migrate_key="ssh-rsa AAAA nope",
                              migrate_address="198.18.255.3:2222")
    done = peers.sync("hn1", engine)
    node = Node.objects.get(name="hn1")
    assert node.migrate_address == "198.18.255.1:2222" and node.migrate_key.startswith(
        "ssh-ed25519 ") and node.migrate_host_key.startswith("ssh-ed25519 ")
    assert node.templates == sorted(t.name for t in engine.template_list())
    here = engine.layout.root / "migrate"
    trusted = (here / "authorized_keys").read_text().splitlines()
    assert len(trusted) == 1 and trusted[0].endswith(hn2.migrate_key)
    assert trusted[0].startswith('restrict,command="') and "migration receive" in trusted[0]
    assert (here / "known_hosts").read_text() == f"[198.18.255.2]:2222 {hn2.migrate_host_key}\n"
    assert done["trusted"] and done["known"]
    assert peers.sync("hn1", engine) == {"reported": "198.18.255.1:2222", "trusted": False,
                                         "known": False}  # nothing new: nothing written
    hn2.delete()
    bad.delete()
    peers.sync("hn1", engine)
    assert (here / "authorized_keys").read_text() == ""  # a node dropped loses its access
    assert (here / "known_hosts").read_text() == ""


@pytest.mark.django_db
def test_a_fresh_node_builds_busybox_and_reports_it_so_it_can_take_moves(tmp_path, settings):
    """A node that never made a VPS has no template cached: it builds busybox (from its
    own packages) for its report, else no VPS could be moved or evacuated to it."""
    from ve import Engine
    settings.MIGRATE_ADDRESS = "198.18.255.4:2222"
    fresh = Engine(root=str(tmp_path / "fresh"), cgroup_parent="vetest-unused/ve")
    assert fresh.template_list() == []
    peers.report("hn4", fresh)
    assert Node.objects.get(name="hn4").templates == ["busybox"]
    assert [t.name for t in fresh.template_list()] == ["busybox"]


@pytest.mark.django_db
def test_reconcile_of_the_target_counts_a_vps_arriving_there_as_known(fleet, engine):
    from hosting.operations import reconcile
    Operation.objects.create(environment=fleet["ve"], kind="migrate", state="running",
                             params={"to": "hn2", "from": "hn1"})
    assert reconcile._arriving("hn2") == {fleet["ve"].veid}
    assert reconcile._arriving("hn1") == set()

