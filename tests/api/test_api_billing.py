"""What a billing system does with a staff token alone: customers, orders, suspend, terminate.

No worker runs, so between steps the test plays the node: it marks the last
operation succeeded and sets the VE's actual state the way the worker would.
"""

import pytest
from rest_framework.test import APIClient

from hosting.core.models import AuditLog
from hosting.customers.models import Customer
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations.models import Operation

from .helpers import PASSWORD, ROOT_PASSWORD

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/environments/"


@pytest.fixture
def billing(world, token_client):
    """The billing system: staff's token, CSRF checks on (tokens need none)."""
    return token_client(world["staff"])


def _node_finishes(op_id, actual_state):
    """Play the node worker: the operation succeeded and the VE is now ``actual_state``."""
    op = Operation.objects.get(pk=op_id)
    op.state = Operation.State.SUCCEEDED
    op.progress = 100
    op.save()
    VE.objects.filter(pk=op.environment_id).update(actual_state=actual_state)


def _new_customer(billing, username="carol"):
    response = billing.post("/api/v1/customers/", {
        "username": username, "email": f"{username}@example.com", "password": PASSWORD,
        "company": "Carol Inc"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_create_customer_returns_the_account_without_its_password(billing):
    body = _new_customer(billing)
    assert body["username"] == "carol" and body["company"] == "Carol Inc"
    assert body["status"] == "active"
    assert "password" not in body
    customer = Customer.objects.get(pk=body["id"])
    assert customer.user.check_password(PASSWORD)
    assert not customer.user.is_staff


def test_the_new_customer_can_sign_in_and_see_an_empty_list(billing):
    _new_customer(billing)
    client = APIClient()
    assert client.login(username="carol", password=PASSWORD)
    assert client.get(ORDERS).json()["count"] == 0


def test_full_billing_lifecycle_through_the_api(billing, world):
    customer = _new_customer(billing)

    ordered = billing.post(ORDERS, {"plan": "small", "template": "busybox",
                                    "hostname": "carol.example.com",
                                    "root_password": ROOT_PASSWORD,
                                    "customer": customer["id"]}, format="json")
    assert ordered.status_code == 202
    assert ordered.json()["kind"] == "create"
    veid = ordered.json()["veid"]
    assert VE.objects.get(veid=veid).owner_id == customer["id"]
    _node_finishes(ordered.json()["id"], VE.State.RUNNING)

    suspended = billing.post(f"{ORDERS}{veid}/suspend/")
    assert suspended.status_code == 202
    assert (suspended.json()["kind"], suspended.json()["state"]) == ("suspend", "queued")
    assert VE.objects.get(veid=veid).desired_state == VE.State.SUSPENDED
    _node_finishes(suspended.json()["id"], VE.State.SUSPENDED)

    resumed = billing.post(f"{ORDERS}{veid}/resume/")
    assert resumed.status_code == 202
    assert resumed.json()["kind"] == "resume"
    assert VE.objects.get(veid=veid).desired_state == VE.State.RUNNING
    _node_finishes(resumed.json()["id"], VE.State.RUNNING)

    terminated = billing.post(f"{ORDERS}{veid}/terminate/")
    assert terminated.status_code == 202
    assert terminated.json()["kind"] == "destroy"
    assert VE.objects.get(veid=veid).desired_state == VE.State.DESTROYED

    kinds = [op["kind"] for op in
             billing.get("/api/v1/operations/", {"environment__veid": veid}).json()["results"]]
    assert sorted(kinds) == ["create", "destroy", "resume", "suspend"]


def test_terminate_by_delete_answers_202_with_a_destroy_operation(billing, world):
    response = billing.delete(f"{ORDERS}{world['ve_b'].veid}/")
    assert response.status_code == 202
    assert (response.json()["kind"], response.json()["veid"]) == ("destroy", world["ve_b"].veid)
    assert VE.objects.get(pk=world["ve_b"].pk).desired_state == VE.State.DESTROYED


def test_a_suspended_vps_can_be_terminated_by_staff(billing, world):
    VE.objects.filter(pk=world["ve_b"].pk).update(actual_state=VE.State.SUSPENDED,
                                                   desired_state=VE.State.SUSPENDED)
    response = billing.post(f"{ORDERS}{world['ve_b'].veid}/terminate/")
    assert response.status_code == 202


def test_the_owner_cannot_act_on_a_suspended_vps(billing, world, api_as):
    veid = world["ve_b"].veid
    op = billing.post(f"{ORDERS}{veid}/suspend/").json()
    _node_finishes(op["id"], VE.State.SUSPENDED)
    owner = api_as("b")
    for action in ("start", "reboot", "terminate"):
        response = owner.post(f"{ORDERS}{veid}/{action}/", {"current_password": PASSWORD},
                              format="json")
        assert response.status_code == 409, action
        assert response.json()["detail"] in (
            "VPS web-b.example.com is suspended; contact support",
            f"cannot {action} VPS web-b.example.com: it is suspended")


# -- customer suspend / unsuspend ---------------------------------------------------------

def test_suspending_a_customer_stops_them_acting_until_unsuspended(billing, world, token_client):
    customer_id, veid = world["a"].pk, world["ve_a"].veid
    alice = token_client(world["a"].user)

    suspended = billing.post(f"/api/v1/customers/{customer_id}/suspend/")
    assert suspended.status_code == 200
    assert suspended.json()["status"] == "suspended"
    assert alice.get(ORDERS).status_code == 200  # may still sign in and look
    refused = alice.post(f"{ORDERS}{veid}/reboot/")
    assert refused.status_code == 403
    assert refused.json()["detail"] == "your account is suspended; contact support"
    assert not Operation.objects.filter(environment=world["ve_a"], state="queued").exists()

    restored = billing.post(f"/api/v1/customers/{customer_id}/unsuspend/")
    assert restored.status_code == 200
    assert restored.json()["status"] == "active"
    assert alice.post(f"{ORDERS}{veid}/reboot/").status_code == 202


def test_customer_status_changes_are_audited(billing, world):
    billing.post(f"/api/v1/customers/{world['a'].pk}/suspend/")
    billing.post(f"/api/v1/customers/{world['a'].pk}/unsuspend/")
    actions = list(AuditLog.objects.filter(object_type="customer").order_by("id")
                   .values_list("action", flat=True))
    assert actions == ["customer.suspended", "customer.active"]


def test_customer_list_filters_by_status(billing, world):
    Customer.objects.filter(pk=world["b"].pk).update(status=Customer.Status.SUSPENDED)
    body = billing.get("/api/v1/customers/", {"status": "suspended"}).json()
    assert [c["username"] for c in body["results"]] == ["bob"]


# -- plan changes -------------------------------------------------------------------------

def test_plan_ram_change_queues_one_set_operation_per_live_vps(
        billing, world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = billing.patch(f"/api/v1/plans/{world['plan'].pk}/", {"ram_mb": 1024},
                                 format="json")
    assert response.status_code == 200
    assert response.json()["ram_mb"] == 1024
    sets = Operation.objects.filter(kind=Operation.Kind.SET)
    assert sorted(op.environment.veid for op in sets) == [world["ve_a"].veid, world["ve_b"].veid]
    assert {op.state for op in sets} == {"queued"}
    assert {op.requested_by for op in sets} == {world["staff"]}
    assert len(callbacks) == 2


def test_plan_ram_change_skips_terminated_creating_and_busy_vpses(billing, world):
    ve_a, ve_b = world["ve_a"], world["ve_b"]
    VE.objects.filter(pk=ve_a.pk).update(actual_state=VE.State.DESTROYED)
    Operation.objects.create(environment=ve_b, kind=Operation.Kind.STOP)  # busy
    VE.objects.create(veid=103, owner=world["a"], plan=world["plan"],
                                 node=world["node"], template=world["template"],
                                 hostname="new.example.com")
    response = billing.patch(f"/api/v1/plans/{world['plan'].pk}/", {"ram_mb": 1024},
                             format="json")
    assert response.status_code == 200
    assert not Operation.objects.filter(kind=Operation.Kind.SET).exists()


def test_plan_price_change_queues_nothing(billing, world):
    response = billing.patch(f"/api/v1/plans/{world['plan'].pk}/", {"monthly_price": "7.50"},
                             format="json")
    assert response.status_code == 200
    assert response.json()["monthly_price"] == "7.50"
    assert not Operation.objects.filter(kind=Operation.Kind.SET).exists()


def test_plan_change_with_a_bad_value_changes_nothing(billing, world):
    response = billing.patch(f"/api/v1/plans/{world['plan'].pk}/", {"ram_mb": 0}, format="json")
    assert response.status_code == 400
    assert "greater than or equal to 1" in response.json()["ram_mb"][0]
    world["plan"].refresh_from_db()
    assert world["plan"].ram_mb == 512
    assert not Operation.objects.filter(kind=Operation.Kind.SET).exists()


def test_staff_create_a_plan_with_templates(billing, world):
    response = billing.post("/api/v1/plans/", {"name": "medium", "ram_mb": 1024,
                                               "monthly_price": "10.00",
                                               "templates": ["busybox"]}, format="json")
    assert response.status_code == 201
    assert response.json()["templates"] == ["busybox"]
    assert billing.post(ORDERS, {"plan": "medium", "template": "busybox",
                                 "hostname": "m.example.com", "root_password": ROOT_PASSWORD,
                                 "customer": world["a"].pk}, format="json").status_code == 202
