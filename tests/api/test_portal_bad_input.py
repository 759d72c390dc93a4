"""The portal's order form and VPS action forms: a 4xx page that says what is wrong, no writes."""

from decimal import Decimal

import pytest

from hosting.customers.models import Customer
from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
from hosting.ipam.models import IPPool
from hosting.operations.models import Operation
from hosting.plans.models import Plan

from .helpers import PASSWORD, ROOT_PASSWORD, counts, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(page_as):
    return page_as("a")


@pytest.fixture
def form(world):
    def data(**changes):
        return {"plan": world["plan"].pk, "template": world["template"].pk,
                "hostname": "new.example.com", "root_password": ROOT_PASSWORD, "ssh_key": "",
                **changes}
    return data


@pytest.fixture
def refused(django_capture_on_commit_callbacks):
    """``refused(call, status, message)``: the page answers ``status``, shows ``message``,
    writes nothing."""
    def check(call, status, message):
        before = counts()
        with django_capture_on_commit_callbacks() as callbacks:
            response = call()
        assert response.status_code == status
        assert message in text(response)
        assert counts() == before
        assert callbacks == []
        return response
    return check


# -- POST /order/ -------------------------------------------------------------------------

def test_order_form_happy_path_redirects_to_the_new_vps(world, alice, form):
    response = alice.post("/order/", form())
    ve = VE.objects.get(hostname="new.example.com")
    assert response.status_code == 302
    assert response["Location"] == f"/vps/{ve.veid}/"
    assert ve.owner == world["a"] and ve.actual_state == VE.State.CREATING
    page = text(alice.get(response["Location"]))
    assert "Your VPS new.example.com is being created." in page


def test_order_form_with_an_unknown_plan(world, alice, form, refused):
    refused(lambda: alice.post("/order/", form(plan=9999)), 400,
            "Select a valid choice. That choice is not one of the available choices.")


def test_order_form_with_a_retired_plan(world, alice, form, refused):
    old = Plan.objects.create(name="legacy", ram_mb=256, monthly_price=Decimal("1"), active=False)
    refused(lambda: alice.post("/order/", form(plan=old.pk)), 400,
            "Select a valid choice. That choice is not one of the available choices.")


def test_order_form_with_a_template_the_plan_does_not_offer(world, alice, form, refused):
    alpine = OSTemplate.objects.create(name="alpine", title="Alpine")
    refused(lambda: alice.post("/order/", form(template=alpine.pk)), 400,
            "plan small does not offer template alpine")


def test_order_form_with_a_taken_hostname(world, alice, form, refused):
    refused(lambda: alice.post("/order/", form(hostname="web-b.example.com")), 400,
            "host name web-b.example.com is taken")


def test_order_form_with_a_bad_hostname(world, alice, form, refused):
    refused(lambda: alice.post("/order/", form(hostname="-bad-")), 400, "bad hostname '-bad-'")


def test_order_form_with_neither_password_nor_ssh_key(world, alice, form, refused):
    refused(lambda: alice.post("/order/", form(root_password="")), 400,
            "give a root password or an SSH key to log in with")


def test_order_form_with_a_bad_ssh_key(world, alice, form, refused):
    refused(lambda: alice.post("/order/", form(root_password="", ssh_key="ssh-rsa nope")), 400,
            "bad SSH key: paste one public key line")


def test_order_form_with_a_short_root_password(world, alice, form, refused):
    refused(lambda: alice.post("/order/", form(root_password="short")), 400,
            "the root password needs at least 8 characters")


def test_order_form_never_echoes_the_root_password(world, alice, form):
    response = alice.post("/order/", form(hostname="-bad-", root_password="Secret-Echo-99"))
    assert response.status_code == 400
    assert "Secret-Echo-99" not in text(response)


def test_order_form_beyond_the_nodes_capacity(world, alice, form, refused):
    huge = Plan.objects.create(name="huge", ram_mb=1 << 20, monthly_price=Decimal("999"))
    refused(lambda: alice.post("/order/", form(plan=huge.pk)), 409,
            "no online node fits plan huge (hn1: no ram left)")


def test_order_form_when_the_ipv4_pool_is_exhausted(world, alice, form, refused, pool4):
    IPPool.objects.filter(pk=pool4.pk).update(last=pool4.first)
    refused(lambda: alice.post("/order/", form()), 409, "no free IPv4 address left on node hn1")


def test_order_form_by_a_suspended_customer(world, alice, form, refused):
    Customer.objects.filter(pk=world["a"].pk).update(status=Customer.Status.SUSPENDED)
    refused(lambda: alice.post("/order/", form()), 403, "your account is suspended")


def test_order_form_by_staff(world, page_as, form, refused):
    staff = page_as("staff")
    refused(lambda: staff.post("/order/", form()), 403,
            "only customers order VPSes here; staff use the API or the admin")


# -- POST /vps/<veid>/... -----------------------------------------------------------------

def test_portal_action_on_a_busy_vps(world, alice, refused, ve_a):
    Operation.objects.create(environment=ve_a, kind=Operation.Kind.STOP)
    refused(lambda: alice.post(f"/vps/{ve_a.veid}/reboot/"), 409,
            "VPS web-a.example.com is busy: stop (queued) must finish first")


def test_portal_start_of_a_running_vps(world, alice, refused, ve_a):
    refused(lambda: alice.post(f"/vps/{ve_a.veid}/start/"), 409,
            "cannot start VPS web-a.example.com: it is already running")


def test_portal_action_by_a_suspended_customer(world, alice, refused, ve_a):
    Customer.objects.filter(pk=world["a"].pk).update(status=Customer.Status.SUSPENDED)
    refused(lambda: alice.post(f"/vps/{ve_a.veid}/reboot/"), 403,
            "your account is suspended; contact support")


def test_portal_password_with_a_wrong_current_password(world, alice, refused, ve_a):
    refused(lambda: alice.post(f"/vps/{ve_a.veid}/password/", {
        "current_password": "wrong-password-1", "root_password": ROOT_PASSWORD}), 403,
        "your current password is needed for this (and it did not match)")


def test_portal_password_too_short(world, alice, refused, ve_a):
    refused(lambda: alice.post(f"/vps/{ve_a.veid}/password/", {
        "current_password": PASSWORD, "root_password": "short"}), 400,
        "Ensure this value has at least 8 characters")


def test_portal_reinstall_with_a_wrong_current_password(world, alice, refused, ve_a):
    refused(lambda: alice.post(f"/vps/{ve_a.veid}/reinstall/", {
        "current_password": "wrong-password-1", "template": ve_a.template.pk}), 403,
        "your current password is needed")


def test_portal_reinstall_with_a_template_the_plan_does_not_offer(world, alice, refused, ve_a):
    alpine = OSTemplate.objects.create(name="alpine", title="Alpine")
    refused(lambda: alice.post(f"/vps/{ve_a.veid}/reinstall/", {
        "current_password": PASSWORD, "template": alpine.pk}), 400,
        "plan small does not offer template alpine")
