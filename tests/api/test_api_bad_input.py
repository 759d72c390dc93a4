"""Bad requests to /api/v1/ get a 4xx whose message says what is wrong, and write nothing.

"Nothing" means no new VirtualEnvironment, Operation, IPAddress or (non sign-in)
AuditLog row, and no dispatch to a node queued for after the commit.
"""

import json
from decimal import Decimal

import pytest

from hosting.core.models import AuditLog
from hosting.customers.models import Customer
from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
from hosting.ipam.models import IPPool
from hosting.nodes.models import Node
from hosting.operations.models import Operation
from hosting.plans.models import Plan

from .helpers import PASSWORD, ROOT_PASSWORD, SSH_KEY, counts

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/environments/"


@pytest.fixture
def alice(api_as):
    return api_as("a")


@pytest.fixture
def order():
    def body(**changes):
        return {"plan": "small", "template": "busybox", "hostname": "new.example.com",
                "root_password": ROOT_PASSWORD, **changes}
    return body


@pytest.fixture
def refused(django_capture_on_commit_callbacks):
    """``refused(call, status, message)``: run ``call()``, check the refusal
    and that nothing moved."""
    def check(call, status, message):
        before = counts()
        with django_capture_on_commit_callbacks() as callbacks:
            response = call()
        assert response.status_code == status, response.content
        assert message in json.dumps(response.json()), response.json()
        assert counts() == before
        assert callbacks == []
        return response.json()
    return check


# -- ordering -----------------------------------------------------------------------------

def test_order_with_an_unknown_plan(alice, order, refused):
    body = refused(lambda: alice.post(ORDERS, order(plan="gold"), format="json"),
                   400, "Object with name=gold does not exist.")
    assert list(body) == ["plan"]


def test_order_with_a_retired_plan(world, alice, order, refused):
    Plan.objects.create(name="legacy", ram_mb=256, monthly_price=Decimal("1"), active=False)
    body = refused(lambda: alice.post(ORDERS, order(plan="legacy"), format="json"),
                   400, "plan legacy is not offered any more")
    assert body["field"] == "plan"


def test_order_with_a_template_the_plan_does_not_offer(world, alice, order, refused):
    OSTemplate.objects.create(name="alpine", title="Alpine")  # active, but not in plan small
    body = refused(lambda: alice.post(ORDERS, order(template="alpine"), format="json"),
                   400, "plan small does not offer template alpine")
    assert body["field"] == "template"


def test_order_with_a_retired_template(world, alice, order, refused, plan):
    old = OSTemplate.objects.create(name="centos6", title="CentOS 6", active=False)
    plan.templates.add(old)
    refused(lambda: alice.post(ORDERS, order(template="centos6"), format="json"),
            400, "plan small does not offer template centos6")


def test_order_with_an_unknown_template(world, alice, order, refused):
    refused(lambda: alice.post(ORDERS, order(template="nope"), format="json"),
            400, "Object with name=nope does not exist.")


def test_order_with_a_taken_hostname(world, alice, order, refused):
    body = refused(lambda: alice.post(ORDERS, order(hostname="web-b.example.com"), format="json"),
                   400, "host name web-b.example.com is taken")
    assert body["field"] == "hostname"


def test_order_with_a_taken_hostname_in_other_case(world, alice, order, refused):
    refused(lambda: alice.post(ORDERS, order(hostname="WEB-B.Example.COM"), format="json"),
            400, "is taken")


def test_a_terminated_vpss_hostname_is_free_again(world, alice, order, ve_b):
    VE.objects.filter(pk=ve_b.pk).update(actual_state=VE.State.DESTROYED)
    response = alice.post(ORDERS, order(hostname="web-b.example.com"), format="json")
    assert response.status_code == 202


@pytest.mark.parametrize("hostname", ["-bad-", "bad_host", "a..b", "x" * 64 + ".com", "ho st"])
def test_order_with_a_bad_hostname(world, alice, order, refused, hostname):
    body = refused(lambda: alice.post(ORDERS, order(hostname=hostname), format="json"),
                   400, f"bad hostname {hostname!r}")
    assert body["field"] == "hostname"


def test_order_with_neither_password_nor_ssh_key(world, alice, order, refused):
    refused(lambda: alice.post(ORDERS, order(root_password="", ssh_key=""), format="json"),
            400, "give a root password or an SSH key to log in with")


def test_order_with_a_bad_ssh_key(world, alice, order, refused):
    body = refused(lambda: alice.post(ORDERS, order(root_password="", ssh_key="ssh-rsa nope"),
                                      format="json"),
                   400, "bad SSH key: paste one public key line")
    assert body["field"] == "ssh_key"


def test_order_with_two_ssh_keys_is_refused(world, alice, order, refused):
    refused(lambda: alice.post(ORDERS, order(ssh_key=SSH_KEY + "\n" + SSH_KEY), format="json"),
            400, "bad SSH key")


def test_order_with_a_short_root_password(world, alice, order, refused):
    body = refused(lambda: alice.post(ORDERS, order(root_password="short"), format="json"),
                   400, "the root password needs at least 8 characters")
    assert body["field"] == "root_password"


def test_order_with_missing_fields(world, alice, refused):
    body = refused(lambda: alice.post(ORDERS, {}, format="json"), 400, "This field is required.")
    assert set(body) == {"plan", "template", "hostname"}


@pytest.mark.parametrize("field, value, lacking", [
    ("ram_mb", 1 << 20, "ram"),          # 1 TiB of RAM on an 8 GiB node
    ("swap_mb", 1 << 20, "swap"),
    ("disk_gib", 100_000, "disk"),
])
def test_order_beyond_the_nodes_capacity_names_the_lacking_resource(world, alice, order, refused,
                                                                   field, value, lacking):
    plan = Plan.objects.create(name="huge", monthly_price=Decimal("999"),
                               **{"ram_mb": 512, field: value})
    body = refused(lambda: alice.post(ORDERS, order(plan="huge"), format="json"), 409,
                   f"no online node fits plan huge (hn1: no {lacking} left)")
    assert body["field"] == "plan"
    assert plan.environments.count() == 0


def test_order_when_no_node_is_online(world, alice, order, refused):
    Node.objects.update(state=Node.State.DRAINING)
    refused(lambda: alice.post(ORDERS, order(), format="json"), 409, "no node is online")


def test_order_when_the_ipv4_pool_is_exhausted(world, alice, order, refused, pool4):
    IPPool.objects.filter(pk=pool4.pk).update(last=pool4.first)  # its one address is ve_a's
    refused(lambda: alice.post(ORDERS, order(), format="json"),
            409, "no free IPv4 address left on node hn1")


def test_order_when_the_ipv6_pool_is_exhausted_returns_the_ipv4_address(world, alice, order,
                                                                      refused, pool6):
    """IPv4 is handed out first; running out of IPv6 must roll that back too."""
    IPPool.objects.filter(pk=pool6.pk).update(last="fd00::11")  # ::10 and ::11 are taken
    refused(lambda: alice.post(ORDERS, order(), format="json"),
            409, "no free IPv6 address left on node hn1")


def test_staff_order_without_a_customer(world, api_as, order, refused):
    staff = api_as("staff")
    body = refused(lambda: staff.post(ORDERS, order(), format="json"),
                   400, "staff must say which customer the VPS is for")
    assert body["field"] == "customer"


def test_staff_order_for_an_unknown_customer(world, api_as, order, refused):
    staff = api_as("staff")
    refused(lambda: staff.post(ORDERS, order(customer=9999), format="json"),
            400, 'Invalid pk \\"9999\\" - object does not exist.')


def test_a_customer_cannot_probe_for_other_customers_ids(world, alice, order):
    real = alice.post(ORDERS, order(customer=world["b"].pk), format="json")
    free = alice.post(ORDERS, order(customer=9999), format="json")
    assert real.status_code == free.status_code
    assert (json.dumps(real.json()).replace(str(world["b"].pk), "<id>")
            == json.dumps(free.json()).replace("9999", "<id>"))


def test_order_by_a_suspended_customer(world, alice, order, refused):
    Customer.objects.filter(pk=world["a"].pk).update(status=Customer.Status.SUSPENDED)
    refused(lambda: alice.post(ORDERS, order(), format="json"),
            403, "your account is suspended; contact support")


def test_staff_order_for_a_suspended_customer(world, api_as, order, refused):
    Customer.objects.filter(pk=world["a"].pk).update(status=Customer.Status.SUSPENDED)
    staff = api_as("staff")
    refused(lambda: staff.post(ORDERS, order(customer=world["a"].pk), format="json"),
            403, "the account is suspended; new orders are refused")


def test_idempotency_key_longer_than_100_characters(world, alice, order, refused):
    refused(lambda: alice.post(ORDERS, order(), format="json", HTTP_IDEMPOTENCY_KEY="k" * 101),
            400, "Idempotency-Key is longer than 100 characters")


def test_idempotency_key_reused_for_a_different_request(world, alice, order, refused, ve_a):
    first = alice.post(f"{ORDERS}{ve_a.veid}/reboot/", HTTP_IDEMPOTENCY_KEY="key-1")
    assert first.status_code == 202
    Operation.objects.filter(pk=first.json()["id"]).update(state="succeeded")
    refused(lambda: alice.post(ORDERS, order(), format="json", HTTP_IDEMPOTENCY_KEY="key-1"),
            409, "this idempotency key was already used for a different request")
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/stop/", HTTP_IDEMPOTENCY_KEY="key-1"),
            409, "this idempotency key was already used for a different request")


def test_another_customers_idempotency_key_does_not_return_their_operation(world, api_as, ve_a,
                                                                          ve_b, refused):
    mine = api_as("b").post(f"{ORDERS}{ve_b.veid}/reboot/", HTTP_IDEMPOTENCY_KEY="shared")
    assert mine.status_code == 202
    alice = api_as("a")
    body = refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/reboot/",
                                      HTTP_IDEMPOTENCY_KEY="shared"),
                   409, "already used for a different request")
    assert mine.json()["id"] not in json.dumps(body)


# -- lifecycle actions --------------------------------------------------------------------

def test_action_on_a_vps_with_an_unfinished_operation_is_busy(world, alice, refused, ve_a):
    Operation.objects.create(environment=ve_a, kind=Operation.Kind.STOP,
                             requested_by=ve_a.owner.user)
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/reboot/"),
            409, "VPS web-a.example.com is busy: stop (queued) must finish first")


@pytest.mark.parametrize("action", ["reboot", "terminate", "reinstall", "password"])
def test_every_action_is_busy_while_an_operation_runs(world, alice, refused, ve_a, action):
    Operation.objects.create(environment=ve_a, kind=Operation.Kind.RESTART,
                             state=Operation.State.RUNNING)
    body = {"current_password": PASSWORD, "root_password": ROOT_PASSWORD}
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/{action}/", body, format="json"),
            409, "is busy: reboot (running) must finish first")


def test_delete_of_a_busy_vps_is_refused(world, alice, refused, ve_a):
    Operation.objects.create(environment=ve_a, kind=Operation.Kind.STOP)
    refused(lambda: alice.delete(f"{ORDERS}{ve_a.veid}/", {"current_password": PASSWORD},
                                 format="json"), 409, "is busy")


@pytest.mark.parametrize("action, state, why", [
    ("start", "running", "cannot start VPS web-a.example.com: it is already running"),
    ("stop", "stopped", "cannot stop VPS web-a.example.com: it is stopped"),
    ("reboot", "creating", "cannot reboot VPS web-a.example.com: it is still being created"),
    ("password", "stopped", "cannot reset root password VPS web-a.example.com: it is stopped"),
    ("terminate", "destroyed", "cannot terminate VPS web-a.example.com: it has been terminated"),
])
def test_action_the_vps_state_does_not_allow(world, alice, refused, ve_a, action, state, why):
    VE.objects.filter(pk=ve_a.pk).update(actual_state=state)
    body = {"current_password": PASSWORD, "root_password": ROOT_PASSWORD}
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/{action}/", body, format="json"), 409, why)


def test_customer_action_on_a_vps_staff_suspended(world, alice, refused, ve_a):
    VE.objects.filter(pk=ve_a.pk).update(desired_state=VE.State.SUSPENDED)
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/reboot/"),
            409, "VPS web-a.example.com is suspended; contact support")


@pytest.mark.parametrize("current", ["wrong-password-1", None])
def test_password_reset_without_the_right_current_password(world, alice, refused, ve_a, current):
    body = {"root_password": ROOT_PASSWORD}
    if current:
        body["current_password"] = current
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/password/", body, format="json"),
            403, "your current password is needed for this (and it did not match)")


def test_a_failed_reauthentication_is_logged_without_the_password(world, alice, ve_a):
    alice.post(f"{ORDERS}{ve_a.veid}/password/",
               {"root_password": ROOT_PASSWORD, "current_password": "guess-number-1"},
               format="json")
    row = AuditLog.objects.get(action="auth.login_failed")
    assert row.detail["username"] == "alice"
    assert "guess-number-1" not in json.dumps(row.detail)


def test_reinstall_with_a_wrong_current_password(world, alice, refused, ve_a):
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/reinstall/",
                               {"current_password": "wrong-password-1"}, format="json"),
            403, "your current password is needed")


def test_password_reset_with_a_short_root_password(world, alice, refused, ve_a):
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/password/",
                               {"root_password": "short", "current_password": PASSWORD},
                               format="json"),
            400, "the root password needs at least 8 characters")


def test_password_reset_without_a_root_password(world, alice, refused, ve_a):
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/password/",
                               {"current_password": PASSWORD}, format="json"),
            400, '"root_password": ["This field is required."]')


def test_reinstall_with_a_template_the_plan_does_not_offer(world, alice, refused, ve_a):
    OSTemplate.objects.create(name="alpine", title="Alpine")
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/reinstall/",
                               {"current_password": PASSWORD, "template": "alpine"},
                               format="json"),
            400, "plan small does not offer template alpine")


def test_reinstall_with_a_bad_ssh_key(world, alice, refused, ve_a):
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/reinstall/",
                               {"current_password": PASSWORD, "ssh_key": "not a key"},
                               format="json"),
            400, "bad SSH key")


@pytest.mark.parametrize("action", ["reboot", "stop", "terminate"])
def test_action_by_a_suspended_customer(world, alice, refused, ve_a, action):
    Customer.objects.filter(pk=world["a"].pk).update(status=Customer.Status.SUSPENDED)
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/{action}/",
                               {"current_password": PASSWORD}, format="json"),
            403, "your account is suspended; contact support")


@pytest.mark.parametrize("action", ["suspend", "resume"])
def test_customer_suspending_or_resuming_their_own_vps(world, alice, refused, ve_a, action):
    refused(lambda: alice.post(f"{ORDERS}{ve_a.veid}/{action}/"), 403, "only staff can do this")


def test_resume_of_a_vps_that_is_not_suspended(world, api_as, refused, ve_a):
    staff = api_as("staff")
    refused(lambda: staff.post(f"{ORDERS}{ve_a.veid}/resume/"),
            409, "cannot resume VPS web-a.example.com: it is already running")


# -- staff endpoints ----------------------------------------------------------------------

def test_creating_a_customer_with_a_taken_username(world, api_as, refused):
    staff = api_as("staff")
    body = refused(lambda: staff.post("/api/v1/customers/", {
        "username": "Alice", "email": "x@example.com", "password": PASSWORD}, format="json"),
        400, "user name Alice is taken")
    assert body["field"] == "username"


def test_creating_a_customer_with_a_weak_password(world, api_as, refused):
    staff = api_as("staff")
    refused(lambda: staff.post("/api/v1/customers/", {
        "username": "carol", "email": "c@example.com", "password": "password"}, format="json"),
        400, "This password is too common.")


def test_creating_a_customer_with_a_bad_username(world, api_as, refused):
    staff = api_as("staff")
    refused(lambda: staff.post("/api/v1/customers/", {
        "username": "carol smith!", "password": PASSWORD}, format="json"),
        400, "Enter a valid username.")


def test_creating_an_ip_pool_with_a_range_outside_its_network(world, api_as, refused):
    staff = api_as("staff")
    refused(lambda: staff.post("/api/v1/ip-pools/", {
        "name": "bad", "network": "203.0.113.0/24", "first": "198.51.100.1",
        "last": "203.0.113.9", "nodes": ["hn1"]}, format="json"),
        400, "198.51.100.1 is outside 203.0.113.0/24")


def test_creating_a_plan_with_zero_ram(world, api_as, refused):
    staff = api_as("staff")
    refused(lambda: staff.post("/api/v1/plans/", {"name": "zero", "ram_mb": 0,
                                                  "monthly_price": "1.00"}, format="json"),
            400, "Ensure this value is greater than or equal to 16.")
