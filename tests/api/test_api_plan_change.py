"""Changing a VPS's plan through the API, the portal, the staff page and (not) the admin.

As far as the database goes: the "plan" operation is queued, never run (see
tests/hosting/test_plan_change_live.py for the node side).
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from hosting.core.models import AuditLog
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations.models import Operation
from hosting.plans.models import Plan
from hosting.usage.models import UsageSample

from tests.staffing import enrol, verified_login

from .helpers import counts, text

pytestmark = pytest.mark.django_db
GIB = 1 << 30


def url(ve):
    return f"/api/v1/environments/{ve.veid}/plan/"


@pytest.fixture
def big(world):
    plan = Plan.objects.create(name="big", ram_mb=1024, disk_gib=20, ipv4_count=1,
                               ipv6_count=2, monthly_price=Decimal("9.00"))
    plan.templates.set([world["template"]])
    return plan


@pytest.fixture
def tiny(world):
    """Smaller than "small" in RAM and disk."""
    return Plan.objects.create(name="tiny", ram_mb=256, disk_gib=2, inodes=100000,
                               monthly_price=Decimal("2.00"))


def sample(ve, disk, inodes=5000, ago=60):
    return UsageSample.objects.create(environment=ve, time=timezone.now() - timedelta(seconds=ago),
                                      disk=disk, inodes=inodes)


def unchanged(before, ve, plan):
    assert counts() == before
    assert VE.objects.get(pk=ve.pk).plan == plan


def test_customer_upgrade_is_accepted_queued_and_audited(world, api_as, big,
                                                        django_capture_on_commit_callbacks):
    ve = world["ve_a"]
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = api_as("a").post(url(ve), {"plan": "big"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["kind"], body["state"], body["veid"]) == ("plan", "queued", ve.veid)
    assert body["requested_by"] == "alice" and body["error_code"] == ""
    op = Operation.objects.get(pk=body["id"])
    # Both plans include two IPv6 addresses; the VPS held one, so it gets the next free one.
    assert op.params == {"plan": "big", "from": "small", "plan_id": big.pk,
                         "from_id": world["plan"].pk, "added": ["fd00::12"]}
    assert sorted(ve.addresses.values_list("address", flat=True)) == [
        "198.18.0.10", "fd00::10", "fd00::12"]
    assert len(sent) == 1  # dispatched to the node after commit
    assert VE.objects.get(pk=ve.pk).plan == big  # accepted: the node now counts it as big
    entry = AuditLog.objects.get(action="ve.plan")
    assert entry.actor == world["a"].user and entry.object_id == str(ve.veid)
    assert entry.detail == {"operation": str(op.pk), "plan": "big", "previous": "small",
                            "upgrade": True, "addresses_added": ["fd00::12"]}
    # The VPS as the API shows it has the new plan.
    assert api_as("a").get(f"/api/v1/environments/{ve.veid}/").json()["plan"] == "big"


def test_idempotency_key_replays_and_the_current_plan_is_a_no_op(world, api_as, big):
    alice, ve = api_as("a"), world["ve_a"]
    first = alice.post(url(ve), {"plan": "big"}, format="json", HTTP_IDEMPOTENCY_KEY="up-1")
    again = alice.post(url(ve), {"plan": "big"}, format="json", HTTP_IDEMPOTENCY_KEY="up-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["id"] == again.json()["id"]
    assert Operation.objects.filter(kind="plan").count() == 1
    before = counts()
    # Without a key, asking for the plan it has (even while the change runs) changes nothing.
    same = alice.post(url(ve), {"plan": "big"}, format="json")
    assert same.status_code == 200 and same.json()["plan"] == "big"
    assert counts() == before
    # The key again for another plan is refused (422), and for another action (409).
    other = alice.post(url(ve), {"plan": "small"}, format="json", HTTP_IDEMPOTENCY_KEY="up-1")
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    Operation.objects.filter(kind="plan").update(state="succeeded")
    reboot = alice.post(f"/api/v1/environments/{ve.veid}/reboot/",
                        HTTP_IDEMPOTENCY_KEY="up-1")
    assert reboot.status_code in (409, 422)
    assert counts() == before


def test_customer_downgrade_refused_by_default_policy(world, api_as, tiny):
    ve, before = world["ve_a"], counts()
    sample(ve, 100 << 20)
    response = api_as("a").post(url(ve), {"plan": "tiny"}, format="json")
    assert response.status_code == 403 and "only upgrades" in response.json()["detail"]
    unchanged(before, ve, world["plan"])


def test_policy_none_refuses_customers_even_upgrades(world, api_as, big, settings):
    settings.CUSTOMER_PLAN_CHANGES = "none"
    ve, before = world["ve_a"], counts()
    response = api_as("a").post(url(ve), {"plan": "big"}, format="json")
    assert response.status_code == 403 and "support" in response.json()["detail"]
    unchanged(before, ve, world["plan"])


def test_policy_any_lets_customers_downgrade_when_the_data_fits(world, api_as, tiny, settings):
    settings.CUSTOMER_PLAN_CHANGES = "any"
    ve = world["ve_a"]
    sample(ve, 300 << 20)
    response = api_as("a").post(url(ve), {"plan": "tiny"}, format="json")
    assert response.status_code == 202, response.content
    assert VE.objects.get(pk=ve.pk).plan == tiny


def test_downgrade_refused_when_the_data_does_not_fit(world, api_as, tiny):
    staff, ve, before = api_as("staff"), world["ve_a"], counts()
    sample(ve, 5 * GIB, ago=3600)
    sample(ve, int(1.9 * GIB))  # the latest counts: 1.9 GiB + margin > 2 GiB
    response = staff.post(url(ve), {"plan": "tiny"}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert "too small" in body["detail"] and "1.90 GiB" in body["detail"]
    assert body["field"] == "plan"
    unchanged(before, ve, world["plan"])


def test_downgrade_refused_while_the_disk_use_is_unknown(world, api_as, tiny):
    ve, before = world["ve_a"], counts()
    response = api_as("staff").post(url(ve), {"plan": "tiny"}, format="json")
    assert response.status_code == 409 and "not known yet" in response.json()["detail"]
    unchanged(before, ve, world["plan"])


def test_downgrade_refused_when_the_files_do_not_fit(world, api_as):
    few = Plan.objects.create(name="few-files", ram_mb=512, disk_gib=10, inodes=2000,
                              monthly_price=Decimal("4.00"))
    ve, before = world["ve_a"], counts()
    sample(ve, 50 << 20, inodes=1950)
    response = api_as("staff").post(url(ve), {"plan": few.name}, format="json")
    assert response.status_code == 409 and "files" in response.json()["detail"]
    unchanged(before, ve, world["plan"])


def test_staff_downgrade_that_fits_is_accepted(world, api_as, tiny):
    ve = world["ve_a"]
    sample(ve, 200 << 20)
    response = api_as("staff").post(url(ve), {"plan": "tiny"}, format="json")
    assert response.status_code == 202
    assert AuditLog.objects.get(action="ve.plan").detail["upgrade"] is False


def test_refused_when_placement_says_no(world, api_as):
    # The node sells 8 GiB x 1.5 of RAM; two VPSes of 512 MiB are on it.
    huge = Plan.objects.create(name="huge", ram_mb=12 * 1024, disk_gib=10, ipv6_count=2,
                               monthly_price=Decimal("90.00"))
    ve, before = world["ve_a"], counts()
    response = api_as("a").post(url(ve), {"plan": "huge"}, format="json")
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "node hn1 has no room for plan huge" in detail and "ram" in detail
    unchanged(before, ve, world["plan"])
    # Just within what is left (12 GiB - 512 MiB for the other VPS) it fits.
    huge.ram_mb = 12 * 1024 - 512
    huge.save()
    assert api_as("a").post(url(ve), {"plan": "huge"}, format="json").status_code == 202


def test_a_smaller_plan_fits_even_an_oversold_node(world, api_as, tiny):
    world["node"].ram_bytes = 256 << 20  # sold far past its RAM already
    world["node"].save()
    ve = world["ve_a"]
    sample(ve, 100 << 20)
    assert api_as("staff").post(url(ve), {"plan": "tiny"}, format="json").status_code == 202


def test_retired_plan_and_plan_without_the_template_are_refused(world, api_as, big):
    ve, before = world["ve_a"], counts()
    big.active = False
    big.save()
    response = api_as("a").post(url(ve), {"plan": "big"}, format="json")
    assert response.status_code == 400 and "not offered" in response.json()["detail"]
    big.active = True
    big.save()
    other = world["template"].__class__.objects.create(name="debian-12", title="Debian 12")
    big.templates.set([other])
    response = api_as("a").post(url(ve), {"plan": "big"}, format="json")
    assert response.status_code == 400 and "does not offer" in response.json()["detail"]
    unchanged(before, ve, world["plan"])


@pytest.mark.parametrize("body", [{}, {"plan": "nosuch"}, {"plan": ["big"]}, {"plan": ""}])
def test_bad_input_is_400(world, api_as, big, body):
    ve, before = world["ve_a"], counts()
    response = api_as("a").post(url(ve), body, format="json")
    assert response.status_code == 400
    unchanged(before, ve, world["plan"])


def test_another_customers_vps_is_404_and_anonymous_401(world, api_as, big):
    ve, before = world["ve_a"], counts()
    assert api_as("b").post(url(ve), {"plan": "big"}, format="json").status_code == 404
    assert api_as("anon").post(url(ve), {"plan": "big"}, format="json").status_code in (401, 403)
    unchanged(before, ve, world["plan"])


def test_busy_or_terminated_vps_is_409(world, api_as, big):
    ve = world["ve_a"]
    Operation.objects.create(environment=ve, kind="restart", requested_by=world["a"].user)
    before = counts()
    response = api_as("a").post(url(ve), {"plan": "big"}, format="json")
    assert response.status_code == 409 and "busy" in response.json()["detail"]
    unchanged(before, ve, world["plan"])
    Operation.objects.filter(environment=ve).update(state="succeeded")
    VE.objects.filter(pk=ve.pk).update(actual_state="destroyed")
    response = api_as("staff").post(url(ve), {"plan": "big"}, format="json")
    assert response.status_code == 409 and "terminated" in response.json()["detail"]


def test_suspended_customer_cannot_change_plans(world, api_as, big):
    world["a"].status = "suspended"
    world["a"].save()
    response = api_as("a").post(url(world["ve_a"]), {"plan": "big"}, format="json")
    assert response.status_code == 403


def test_the_endpoint_is_in_the_schema(world, api_as):
    schema = api_as("a").get("/api/v1/schema/?format=json").json()
    post = schema["paths"]["/api/v1/environments/{veid}/plan/"]["post"]
    assert "202" in post["responses"] and "409" in post["responses"]
    assert "smaller disk" in post["description"]
    operation = schema["components"]["schemas"]["Operation"]["properties"]
    assert "disk_too_small" in operation["error_code"]["description"]


# -- the portal and staff pages -----------------------------------------------------------

def test_portal_page_lists_plans_with_price_changes_and_refusals(world, page_as, big, tiny):
    page = page_as("a").get(f"/vps/{world['ve_a'].veid}/plan/")
    assert page.status_code == 200
    html = text(page)
    assert "Change to big" in html and "9.00" in html and "RAM: 512 MiB → 1024 MiB" in html
    # A downgrade shows why it is refused instead of a button.
    assert "Change to tiny" not in html and "only upgrades" in html


def test_portal_change_redirects_and_refusal_is_shown(world, page_as, big):
    ve = world["ve_a"]
    client = page_as("a")
    response = client.post(f"/vps/{ve.veid}/plan/", {"plan": "big"})
    assert response.status_code == 302 and response["Location"] == f"/vps/{ve.veid}/"
    assert VE.objects.get(pk=ve.pk).plan == big
    # Refusals come back on the page, with their status: back down is not for customers...
    response = client.post(f"/vps/{ve.veid}/plan/", {"plan": "small"})
    assert response.status_code == 403 and "only upgrades" in text(response)
    # ...and a further upgrade waits for the first to be done.
    Plan.objects.create(name="bigger", ram_mb=2048, disk_gib=40, ipv6_count=2,
                        monthly_price=Decimal("19"))
    response = client.post(f"/vps/{ve.veid}/plan/", {"plan": "bigger"})
    assert response.status_code == 409 and "busy" in text(response)
    assert 'id="plan-error"' in response.content.decode()
    assert VE.objects.get(pk=ve.pk).plan == big
    response = client.post(f"/vps/{ve.veid}/plan/", {"plan": "nosuch"})
    assert response.status_code == 400 and "choose one of the plans" in text(response)


def test_portal_page_of_another_customers_vps_is_404(world, page_as, big):
    ve, before = world["ve_a"], counts()
    client = page_as("b")
    assert client.get(f"/vps/{ve.veid}/plan/").status_code == 404
    assert client.post(f"/vps/{ve.veid}/plan/", {"plan": "big"}).status_code == 404
    unchanged(before, ve, world["plan"])


def test_staff_page_changes_a_customers_plan(world, page_as, tiny):
    ve = world["ve_b"]
    sample(ve, 100 << 20)
    client = page_as("staff")
    page = client.get(f"/staff/vps/{ve.veid}/plan/")
    assert page.status_code == 200 and "Change to tiny" in text(page)
    response = client.post(f"/staff/vps/{ve.veid}/plan/", {"plan": "tiny"})
    assert response.status_code == 302 and response["Location"] == "/staff/vps/"
    assert VE.objects.get(pk=ve.pk).plan == tiny
    assert AuditLog.objects.get(action="ve.plan").actor == world["staff"]
    assert page_as("a").get(f"/staff/vps/{ve.veid}/plan/").status_code == 403


def test_detail_page_links_to_the_plan_page(world, page_as):
    veid = world["ve_a"].veid
    assert f'id="btn-plan" href="/vps/{veid}/plan/"' in text(page_as("a").get(f"/vps/{veid}/"))
    assert f'href="/staff/vps/{veid}/plan/"' in text(page_as("staff").get(f"/vps/{veid}/"))


# -- the admin cannot bypass it -----------------------------------------------------------

def test_admin_cannot_change_plan_node_state_or_add(world, big):
    from django.contrib.auth.models import User
    from django.test import Client
    root = User.objects.create_superuser("root", "root@example.com", "Root-Pass-Word-9")
    client = Client()
    enrol(root)
    verified_login(client, root)
    ve = world["ve_a"]
    change = f"/admin/environments/virtualenvironment/{ve.pk}/change/"
    page = client.get(change)
    assert page.status_code == 200
    for field in ("plan", "node", "veid", "owner", "actual_state", "desired_state"):
        assert f'name="{field}"' not in page.content.decode(), field
    client.post(change, {"veid": 999, "plan": big.pk, "node": world["node"].pk,
                         "owner": world["b"].pk, "actual_state": "stopped",
                         "desired_state": "stopped", "hostname": "x.example.com"})
    ve = VE.objects.get(pk=ve.pk)
    assert (ve.veid, ve.plan, ve.owner, ve.actual_state, ve.hostname) == (
        101, world["plan"], world["a"], "running", "web-a.example.com")
    assert client.get("/admin/environments/virtualenvironment/add/").status_code == 403
    assert not Operation.objects.filter(kind="plan").exists()
    # nor make or edit operations there
    assert client.get("/admin/operations/operation/add/").status_code == 403
    op = world["op_a"]
    assert client.post(f"/admin/operations/operation/{op.pk}/change/",
                       {"state": "succeeded"}).status_code == 403


def test_a_failed_operation_shows_its_error_code(world, api_as):
    op = world["op_a"]
    Operation.objects.filter(pk=op.pk).update(state="failed", error="VE 101: no such VE",
                                              error_code="not_found")
    body = api_as("a").get(f"/api/v1/operations/{op.pk}/").json()
    assert (body["state"], body["error_code"]) == ("failed", "not_found")
    listed = api_as("a").get("/api/v1/operations/?state=failed").json()["results"]
    assert [o["error_code"] for o in listed] == ["not_found"]


# -- addresses: a plan with more brings them, one with fewer takes none ---------------------

def test_a_plan_needing_more_addresses_than_the_pools_have_is_refused(world, api_as):
    world["pool4"].last = "198.18.0.11"  # both addresses held by the two VPSes
    world["pool4"].save()
    Plan.objects.create(name="two-ips", ram_mb=512, disk_gib=10, ipv4_count=2, ipv6_count=2,
                        monthly_price=Decimal("7"))
    ve, before = world["ve_a"], counts()
    held = sorted(ve.addresses.values_list("address", flat=True))
    response = api_as("a").post(url(ve), {"plan": "two-ips"}, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["detail"] == ("node hn1 has no room for plan two-ips: "
                                         "1 more IPv4 address(es) needed, 0 free")
    unchanged(before, ve, world["plan"])
    assert sorted(ve.addresses.values_list("address", flat=True)) == held


def test_fewer_addresses_is_a_downgrade_and_staff_keep_the_addresses(world, api_as):
    Plan.objects.create(name="v4-only", ram_mb=512, disk_gib=10, ipv4_count=1, ipv6_count=0,
                        monthly_price=Decimal("5"))
    ve = world["ve_a"]
    held = sorted(ve.addresses.values_list("address", flat=True))
    refused = api_as("a").post(url(ve), {"plan": "v4-only"}, format="json")
    assert refused.status_code == 403
    assert "less IPv6 addresses" in refused.json()["detail"]
    assert api_as("staff").post(url(ve), {"plan": "v4-only"}, format="json").status_code == 202
    assert sorted(ve.addresses.values_list("address", flat=True)) == held
