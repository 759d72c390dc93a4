"""The seccomp relaxation in the API: a plan's ``seccomp_allow`` and a VPS's override.

Administrators set both; every staff role reads them; customers never see
them (403 on the override route, the field left out of plans). Bad names are
a 400 that changes nothing.
"""

import pytest

from hosting.core.models import AuditLog
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations.models import Operation
from hosting.plans.models import Plan

from .helpers import counts, fill
from .test_api_permissions import NOT_SIGNED_IN, ROLES, STAFF_ROLES, role_refusal

pytestmark = pytest.mark.django_db

ROUTE = "/api/v1/environments/{ve_b}/seccomp/"
# anon, a, b (the owner), staff (administrator), support, billing, auditor
GET_STATUS = (401, 403, 403, 200, 200, 200, 200)
POST_STATUS = (401, 403, 403, 202, 403, 403, 403)


@pytest.mark.parametrize("role, expected", list(zip(ROLES, GET_STATUS)), ids=ROLES)
def test_who_reads_a_vpss_override(api_as, world, role, expected):
    """Every staff role reads it; customers, the owner too, get 403 (never see it)."""
    response = api_as(role).get(fill(ROUTE, world))
    assert response.status_code == expected, response.content
    if expected == 200:
        assert response.json() == {"override": None, "plan": [], "effective": []}
    elif role == "anon":
        assert response.json() == {"detail": NOT_SIGNED_IN}
    else:
        assert response.json() == {"detail": "only staff can use this endpoint"}


@pytest.mark.parametrize("role, expected", list(zip(ROLES, POST_STATUS)), ids=ROLES)
def test_who_sets_a_vpss_override(api_as, world, role, expected):
    """Administrators only; a refusal writes nothing (no row, no operation, no audit)."""
    before = counts()
    response = api_as(role).post(fill(ROUTE, world), {"seccomp_allow": ["keyring"]},
                                 format="json")
    assert response.status_code == expected, response.content
    ve = VE.objects.get(pk=world["ve_b"].pk)
    if expected == 202:
        op = Operation.objects.get(pk=response.json()["id"])
        assert (op.kind, op.state, op.environment_id) == ("set", "queued", ve.pk)
        assert op.params == {"seccomp_allow": "keyring", "reboot": False}
        assert ve.seccomp_allow == "keyring" and ve.engine_seccomp_allow() == "keyring"
        row = AuditLog.objects.get(action="ve.seccomp")
        assert row.detail["override"] == "keyring" and row.detail["previous"] is None
        return
    assert counts() == before and ve.seccomp_allow is None
    if role in STAFF_ROLES:
        assert response.json() == {"detail": role_refusal(role)}
    elif role != "anon":
        assert response.json() == {"detail": "only staff can use this endpoint"}


def test_a_stranger_gets_the_same_answer_for_any_veid(api_as, world):
    """A customer learns nothing about which VEIDs exist."""
    client = api_as("a")
    theirs = client.post(fill(ROUTE, world), {"seccomp_allow": []}, format="json")
    nobodys = client.post("/api/v1/environments/9999/seccomp/", {"seccomp_allow": []},
                          format="json")
    assert (theirs.status_code, theirs.json()) == (nobodys.status_code, nobodys.json())


def test_staff_asking_for_a_missing_vps_get_404(api_as, world):
    response = api_as("staff").post("/api/v1/environments/9999/seccomp/",
                                    {"seccomp_allow": []}, format="json")
    assert response.status_code == 404


@pytest.mark.parametrize("body, message", [
    ({"seccomp_allow": ["everything"]}, "unknown call or group 'everything' (groups: bpf, "
                                        "io_uring, keyring, perf, syslog, userfaultfd"),
    ({"seccomp_allow": ["kexec_load"]}, "kexec_load harms the host whatever the VE"),
    ({"seccomp_allow": ["keyring", "init_module"]}, "init_module harms the host whatever the VE"),
    ({"seccomp_allow": "keyring"}, "A list of names is expected"),
    ({"seccomp_allow": [1]}, "unknown call or group '1'"),
    ({"seccomp_allow": ["x" * 41]}, "no more than 40 characters"),
    ({"seccomp_allow": {"x": 1}}, None),
    ({}, "This field is required."),
    ({"seccomp_allow": ["keyring"], "reboot": "later"}, None),
])
def test_bad_names_are_a_400_that_changes_nothing(api_as, world, body, message):
    before = counts()
    response = api_as("staff").post(fill(ROUTE, world), body, format="json")
    assert response.status_code == 400, response.content
    if message:
        assert message in str(response.json())
    assert counts() == before
    assert VE.objects.get(pk=world["ve_b"].pk).seccomp_allow is None


def test_null_follows_the_plan_and_an_empty_list_is_the_full_filter(api_as, world):
    Plan.objects.filter(pk=world["plan"].pk).update(seccomp_allow="io_uring")
    client, url = api_as("staff"), fill(ROUTE, world)
    assert client.get(url).json() == {"override": None, "plan": ["io_uring"],
                                      "effective": ["io_uring"]}
    assert client.post(url, {"seccomp_allow": []}, format="json").status_code == 202
    assert client.get(url).json() == {"override": [], "plan": ["io_uring"], "effective": []}
    Operation.objects.filter(state="queued").update(state="succeeded")
    assert client.post(url, {"seccomp_allow": None, "reboot": True},
                       format="json").status_code == 202
    assert client.get(url).json()["override"] is None
    assert Operation.objects.get(state="queued").params == {"seccomp_allow": None,
                                                            "reboot": True}


def test_a_busy_vps_is_a_409_and_keeps_its_override(api_as, world):
    Operation.objects.create(environment=world["ve_b"], kind="stop")
    response = api_as("staff").post(fill(ROUTE, world), {"seccomp_allow": ["bpf"]},
                                    format="json")
    assert response.status_code == 409 and "busy" in response.json()["detail"]
    assert VE.objects.get(pk=world["ve_b"].pk).seccomp_allow is None


def test_a_terminated_vps_is_a_409(api_as, world):
    VE.objects.filter(pk=world["ve_b"].pk).update(actual_state="destroyed")
    response = api_as("staff").post(fill(ROUTE, world), {"seccomp_allow": ["bpf"]},
                                    format="json")
    assert response.status_code == 409


def test_the_schema_documents_the_route(api_as, world):
    schema = api_as("staff").get("/api/v1/schema/?format=json").json()
    route = schema["paths"]["/api/v1/environments/{veid}/seccomp/"]
    assert set(route["post"]["responses"]) >= {"202", "400", "403", "404", "409"}
    assert set(route["get"]["responses"]) >= {"200", "403", "404"}
    usage = schema["paths"]["/api/v1/environments/{veid}/usage/"]["get"]["description"]
    assert "conntrack_refused" in usage and "connections" in usage


# -- the plan field -----------------------------------------------------------------------

PLAN = {"name": "relaxed", "ram_mb": 512, "monthly_price": "5.00"}


@pytest.mark.parametrize("role, expected", [("staff", 201), ("billing", 403)])
def test_only_administrators_create_a_relaxed_plan(api_as, world, role, expected):
    before = Plan.objects.count()
    response = api_as(role).post("/api/v1/plans/", dict(PLAN, seccomp_allow=["keyring", "bpf"]),
                                 format="json")
    assert response.status_code == expected, response.content
    if expected == 201:
        assert response.json()["seccomp_allow"] == ["bpf", "keyring"]
        assert Plan.objects.get(name="relaxed").seccomp_allow == "bpf keyring"
    else:
        assert "administrators" in response.json()["detail"]
        assert Plan.objects.count() == before


def test_billing_edits_a_plan_but_not_its_relaxation(api_as, world):
    Plan.objects.filter(pk=world["plan"].pk).update(seccomp_allow="keyring")
    client, url = api_as("billing"), fill("/api/v1/plans/{plan}/", world)
    body = client.get(url).json()
    assert body["seccomp_allow"] == ["keyring"]  # shown to them
    assert client.put(url, dict(body, monthly_price="7.00"), format="json").status_code == 200
    refused = client.patch(url, {"seccomp_allow": ["keyring", "bpf"]}, format="json")
    assert refused.status_code == 403 and refused.json()["field"] == "seccomp_allow"
    plan = Plan.objects.get(pk=world["plan"].pk)
    assert (plan.seccomp_allow, str(plan.monthly_price)) == ("keyring", "7.00")


def test_a_plan_change_of_the_relaxation_reaches_its_vpses(api_as, world, node):
    response = api_as("staff").patch(fill("/api/v1/plans/{plan}/", world),
                                     {"seccomp_allow": ["io_uring"]}, format="json")
    assert response.status_code == 200, response.content
    queued = Operation.objects.filter(kind="set", state="queued")
    assert {op.environment_id for op in queued} == {world["ve_a"].pk, world["ve_b"].pk}


@pytest.mark.parametrize("value", [["umount_force"], ["nope"], "keyring bpf"])
def test_a_bad_plan_value_is_a_400(api_as, world, value):
    response = api_as("staff").patch(fill("/api/v1/plans/{plan}/", world),
                                     {"seccomp_allow": value}, format="json")
    assert response.status_code == 400, response.content  # a string too: a list is asked
    assert "seccomp_allow" in response.json()
    assert Plan.objects.get(pk=world["plan"].pk).seccomp_allow == ""


@pytest.mark.parametrize("role", ["a", "b"])
def test_customers_never_see_a_plans_relaxation(api_as, world, role):
    Plan.objects.filter(pk=world["plan"].pk).update(seccomp_allow="keyring")
    client = api_as(role)
    assert "seccomp_allow" not in client.get(fill("/api/v1/plans/{plan}/", world)).json()
    assert all("seccomp_allow" not in p for p in client.get("/api/v1/plans/").json()["results"])
