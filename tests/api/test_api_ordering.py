"""Ordering a VPS through the API, as far as the database goes (Celery is never reached).

The dispatch to the node's queue is a ``transaction.on_commit`` callback; the
tests capture it without running it (or run it against a stub ``send``).
"""

import ipaddress

import pytest

from hosting.core.models import AuditLog
from hosting.environments.models import VirtualEnvironment as VE
from hosting.ipam.models import IPAddress
from hosting.operations import dispatch
from hosting.operations.models import Operation

from .helpers import PASSWORD, ROOT_PASSWORD, SSH_KEY, counts

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/environments/"


def _order(**changes):
    return {"plan": "small", "template": "busybox", "hostname": "new.example.com",
            "root_password": ROOT_PASSWORD, **changes}


@pytest.fixture
def alice(api_as):
    return api_as("a")


def test_order_answers_202_with_a_queued_create_operation(world, alice):
    response = alice.post(ORDERS, _order(), format="json")
    assert response.status_code == 202
    body = response.json()
    assert (body["kind"], body["state"], body["progress"]) == ("create", "queued", 0)
    assert body["requested_by"] == "alice"
    assert body["url"].endswith(f"/api/v1/operations/{body['id']}/")
    assert alice.get(body["url"]).json()["id"] == body["id"]


def test_order_writes_a_creating_vps_on_the_online_node(world, alice):
    body = alice.post(ORDERS, _order(), format="json").json()
    ve = VE.objects.get(veid=body["veid"])
    assert ve.veid == 103  # the next free VEID after the fixtures' 101 and 102
    assert (ve.actual_state, ve.desired_state) == ("creating", "running")
    assert (ve.owner, ve.plan, ve.node, ve.template) == (
        world["a"], world["plan"], world["node"], world["template"])
    assert Operation.objects.get(pk=body["id"]).environment == ve


def test_order_allocates_the_plans_addresses_from_the_nodes_pools(world, alice):
    body = alice.post(ORDERS, _order(), format="json").json()
    held = IPAddress.objects.filter(environment__veid=body["veid"]).select_related("pool")
    by_version = {4: [], 6: []}
    for address in held:
        by_version[ipaddress.ip_address(address.address).version].append(address)
    assert len(by_version[4]) == world["plan"].ipv4_count == 1
    assert len(by_version[6]) == world["plan"].ipv6_count == 2
    assert {a.pool for a in by_version[4]} == {world["pool4"]}
    assert {a.pool for a in by_version[6]} == {world["pool6"]}
    # The first free addresses after the fixtures' VEs, skipping none and reusing none.
    assert [a.address for a in by_version[4]] == ["198.18.0.12"]
    assert sorted(a.address for a in by_version[6]) == ["fd00::12", "fd00::13"]
    detail = alice.get(f"{ORDERS}{body['veid']}/").json()
    assert sorted(detail["addresses"]) == sorted(a.address for a in held)


def test_order_keeps_only_the_root_passwords_hash(world, alice):
    body = alice.post(ORDERS, _order(ssh_key=SSH_KEY), format="json").json()
    params = Operation.objects.get(pk=body["id"]).params
    assert params["password_hash"].startswith("$6$")
    assert ROOT_PASSWORD not in str(params)
    assert params["ssh_key"] == SSH_KEY
    assert ROOT_PASSWORD not in str(AuditLog.objects.values_list("detail", flat=True))


def test_order_with_an_ssh_key_only(world, alice):
    response = alice.post(ORDERS, _order(root_password="", ssh_key=SSH_KEY), format="json")
    assert response.status_code == 202
    params = Operation.objects.get(pk=response.json()["id"]).params
    assert params == {"ssh_key": SSH_KEY}


def test_order_is_audited(world, alice):
    body = alice.post(ORDERS, _order(), format="json").json()
    row = AuditLog.objects.get(action="ve.order")
    assert (row.actor, row.object_type, row.object_id) == (world["a"].user, "virtualenvironment",
                                                           str(body["veid"]))
    assert row.detail == {"operation": body["id"], "plan": "small", "template": "busybox",
                          "node": "hn1"}


def test_order_registers_exactly_one_dispatch_for_after_the_commit(
        world, alice, django_capture_on_commit_callbacks, monkeypatch):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        body = alice.post(ORDERS, _order(), format="json").json()
    assert len(callbacks) == 1
    sent = []
    monkeypatch.setattr(dispatch, "send", lambda op_id, queue: sent.append((op_id, queue)))
    callbacks[0]()
    assert [(str(op_id), queue) for op_id, queue in sent] == [(body["id"], "node.hn1")]


def test_staff_order_for_a_customer(world, api_as):
    response = api_as("staff").post(ORDERS, _order(customer=world["b"].pk), format="json")
    assert response.status_code == 202
    op = Operation.objects.get(pk=response.json()["id"])
    assert op.environment.owner == world["b"]
    assert op.requested_by == world["staff"]
    assert op.environment.veid in [ve["veid"] for ve in
                                   api_as("b").get(ORDERS).json()["results"]]


def test_a_customer_may_name_themselves_as_the_customer(world, alice):
    response = alice.post(ORDERS, _order(customer=world["a"].pk), format="json")
    assert response.status_code == 202
    assert VE.objects.get(veid=response.json()["veid"]).owner == world["a"]


# -- Idempotency-Key ----------------------------------------------------------------------

def test_the_same_idempotency_key_twice_returns_the_same_order(
        world, alice, django_capture_on_commit_callbacks):
    before = counts()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = alice.post(ORDERS, _order(), format="json", HTTP_IDEMPOTENCY_KEY="order-1")
        again = alice.post(ORDERS, _order(), format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["id"] == again.json()["id"]
    assert counts()["ves"] == before["ves"] + 1
    assert counts()["operations"] == before["operations"] + 1
    assert counts()["addresses"] == before["addresses"] + 3
    assert len(callbacks) == 1


def test_the_same_idempotency_key_twice_on_an_action_returns_the_same_operation(world, alice,
                                                                              ve_a):
    first = alice.post(f"{ORDERS}{ve_a.veid}/reboot/", HTTP_IDEMPOTENCY_KEY="reboot-1")
    again = alice.post(f"{ORDERS}{ve_a.veid}/reboot/", HTTP_IDEMPOTENCY_KEY="reboot-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["id"] == again.json()["id"]
    assert ve_a.operations.filter(kind=Operation.Kind.RESTART).count() == 1


def test_without_a_key_a_second_order_of_the_same_hostname_is_refused(world, alice):
    assert alice.post(ORDERS, _order(), format="json").status_code == 202
    again = alice.post(ORDERS, _order(), format="json")
    assert again.status_code == 400
    assert again.json()["detail"] == "host name new.example.com is taken"


# -- after the order ----------------------------------------------------------------------

def test_a_vps_being_created_takes_no_other_action(world, alice):
    veid = alice.post(ORDERS, _order(), format="json").json()["veid"]
    response = alice.post(f"{ORDERS}{veid}/reboot/")
    assert response.status_code == 409
    assert "still being created" in response.json()["detail"]


def test_a_vps_being_created_can_be_terminated_once_the_create_finished(world, alice):
    body = alice.post(ORDERS, _order(), format="json").json()
    busy = alice.delete(f"{ORDERS}{body['veid']}/", {"current_password": PASSWORD},
                        format="json")
    assert busy.status_code == 409 and "busy" in busy.json()["detail"]
    Operation.objects.filter(pk=body["id"]).update(state=Operation.State.FAILED)
    response = alice.delete(f"{ORDERS}{body['veid']}/", {"current_password": PASSWORD},
                            format="json")
    assert response.status_code == 202
    assert response.json()["kind"] == "destroy"
