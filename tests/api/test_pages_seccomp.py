"""The seccomp relaxation on the pages: the staff VPS page's card and form, the plan form.

Staff see the card; administrators get its form; customers never see a word
of it. A refused or bad post changes nothing.
"""

import pytest

from hosting.core.models import AuditLog
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations.models import Operation
from hosting.plans.models import Plan

from .helpers import counts, fill, text
from .test_page_permissions import PLAN_FORM

pytestmark = pytest.mark.django_db

PAGE, POST = "/vps/{ve_b}/", "/staff/vps/{ve_b}/seccomp/"


@pytest.mark.parametrize("role, card, form", [
    ("staff", True, True), ("support", True, False), ("billing", True, False),
    ("auditor", True, False), ("b", False, False)])
def test_who_sees_the_card_and_its_form(page_as, world, role, card, form):
    Plan.objects.filter(pk=world["plan"].pk).update(seccomp_allow="keyring")
    page = text(page_as(role).get(fill(PAGE, world)))
    assert ('id="seccomp"' in page) is card
    assert ('id="seccomp-form"' in page) is form
    if card:
        assert "<code>keyring</code>" in page and "as its plan small says" in page
        if form:
            assert "next reboot" in page
    else:
        assert "seccomp" not in page.lower() and "keyring" not in page


# anon goes to the sign-in page; customers and other roles get 403
@pytest.mark.parametrize("role, expected", [
    ("anon", 302), ("a", 403), ("b", 403), ("staff", 302), ("support", 403),
    ("billing", 403), ("auditor", 403)])
def test_who_may_post_the_override(page_as, world, role, expected):
    before, client = counts(), page_as(role)
    response = client.post(fill(POST, world), {"seccomp_allow": ["io_uring"]})
    assert response.status_code == expected
    ve = VE.objects.get(pk=world["ve_b"].pk)
    if role == "staff":
        assert response["Location"] == fill(PAGE, world)
        assert ve.seccomp_allow == "io_uring"
        op = Operation.objects.get(state="queued")
        assert op.params == {"seccomp_allow": "io_uring", "reboot": False}
        assert AuditLog.objects.filter(action="ve.seccomp").count() == 1
        follow = text(client.get(fill(PAGE, world)))
        assert "it takes effect at the VPS's next reboot" in follow
        return
    if role == "anon":
        assert "/login" in response["Location"] or "login" in response["Location"]
    assert counts() == before and ve.seccomp_allow is None


def test_follow_plan_and_reboot_now(page_as, world):
    VE.objects.filter(pk=world["ve_b"].pk).update(seccomp_allow="bpf")
    response = page_as("staff").post(fill(POST, world), {"follow_plan": "on", "reboot": "on",
                                                         "seccomp_allow": ["bpf"]})
    assert response.status_code == 302
    assert VE.objects.get(pk=world["ve_b"].pk).seccomp_allow is None
    assert Operation.objects.get(state="queued").params == {"seccomp_allow": None,
                                                            "reboot": True}


@pytest.mark.parametrize("names", [["everything"], ["kexec_load"]])
def test_a_bad_name_changes_nothing_and_says_why(page_as, world, names):
    client = page_as("staff")
    before = counts()
    response = client.post(fill(POST, world), {"seccomp_allow": names})
    assert response.status_code == 302
    assert counts() == before
    assert VE.objects.get(pk=world["ve_b"].pk).seccomp_allow is None
    assert "Seccomp filter not changed" in text(client.get(fill(PAGE, world)))


def test_a_busy_vps_changes_nothing_and_says_why(page_as, world):
    Operation.objects.create(environment=world["ve_b"], kind="stop")
    client = page_as("staff")
    client.post(fill(POST, world), {"seccomp_allow": ["bpf"]})
    assert VE.objects.get(pk=world["ve_b"].pk).seccomp_allow is None
    assert "is busy" in text(client.get(fill(PAGE, world)))


# -- the plan form ------------------------------------------------------------------------

def test_billing_sees_the_plans_relaxation_but_cannot_change_it(page_as, world):
    Plan.objects.filter(pk=world["plan"].pk).update(seccomp_allow="keyring")
    client = page_as("billing")
    page = text(client.get(fill("/staff/plans/{plan}/", world)))
    assert 'name="seccomp_allow"' in page and "disabled" in page
    assert "administrators only" in page
    posted = dict(PLAN_FORM, connections=16384, seccomp_allow=["bpf"], monthly_price="9.00")
    assert client.post(fill("/staff/plans/{plan}/", world), posted).status_code == 302
    plan = Plan.objects.get(pk=world["plan"].pk)
    assert (plan.seccomp_allow, str(plan.monthly_price)) == ("keyring", "9.00")


def test_an_administrator_sets_it_on_the_plan_form(page_as, world):
    posted = dict(PLAN_FORM, connections=16384, seccomp_allow=["keyring", "io_uring"])
    response = page_as("staff").post(fill("/staff/plans/{plan}/", world), posted)
    assert response.status_code == 302
    assert Plan.objects.get(pk=world["plan"].pk).seccomp_allow == "io_uring keyring"
    # its VPSes get it on their nodes, as a limit change does
    assert Operation.objects.filter(kind="set", state="queued").count() == 2


def test_the_plan_form_refuses_an_unknown_name(page_as, world):
    posted = dict(PLAN_FORM, connections=16384, seccomp_allow=["everything"])
    response = page_as("staff").post(fill("/staff/plans/{plan}/", world), posted)
    assert response.status_code == 400
    assert Plan.objects.get(pk=world["plan"].pk).seccomp_allow == ""


def test_the_plan_list_names_a_relaxation(page_as, world):
    Plan.objects.filter(pk=world["plan"].pk).update(seccomp_allow="keyring")
    assert "seccomp: keyring" in text(page_as("auditor").get("/staff/plans/"))
