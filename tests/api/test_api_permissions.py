"""Who may call what on /api/v1/: anonymous, customer A, customer B (the owner) and staff
of each role: ``staff`` (an administrator), support, billing and a read-only auditor
(hosting/core/roles.py).

The objects under test belong to customer B (``ve_b``, ``op_b``), so customer A
plays the stranger: A must get 404 (never 403, which would confirm the VPS
exists) and nothing may be written on A's behalf.

Anonymous callers get 401 with a ``WWW-Authenticate: Token`` challenge:
TokenAuthentication is the first authentication class.
"""

import pytest

from hosting.core.models import AuditLog
from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
from hosting.operations.models import Operation
from hosting.plans.models import Plan

from tests.staffing import enrol, verified_login

from .helpers import PASSWORD, ROOT_PASSWORD, counts, fill

pytestmark = pytest.mark.django_db

ROLES = ("anon", "a", "b", "staff", "support", "billing", "auditor")
STAFF_ROLES = ("support", "billing", "auditor")
NOT_SIGNED_IN = "Authentication credentials were not provided."


def role_refusal(role):
    label = {"support": "support", "billing": "billing", "auditor": "auditor (read-only)"}[role]
    return f"your staff role ({label}) does not allow this"


def _matrix(table):
    """Expand {path: (anon, a, b, staff, support, billing, auditor)} rows into
    (role, path, status) cases."""
    return [pytest.param(role, path, statuses[i], id=f"{role}-{path}")
            for path, statuses in table for i, role in enumerate(ROLES)]


# -- reads --------------------------------------------------------------------------------

READS = [  # anon, a, b, staff (administrator), support, billing, auditor
    ("/api/v1/", (401, 200, 200, 200, 200, 200, 200)),
    ("/api/v1/environments/", (401, 200, 200, 200, 200, 200, 200)),
    ("/api/v1/environments/{ve_b}/", (401, 404, 200, 200, 200, 200, 200)),
    ("/api/v1/environments/{ve_b}/usage/", (401, 404, 200, 200, 200, 200, 200)),
    ("/api/v1/environments/{ve_b}/usage/?range=30d", (401, 404, 200, 200, 200, 200, 200)),
    # a VPS's seccomp override: every staff role reads it, customers (its owner too) never
    ("/api/v1/environments/{ve_b}/seccomp/", (401, 403, 403, 200, 200, 200, 200)),
    ("/api/v1/operations/", (401, 200, 200, 200, 200, 200, 200)),
    ("/api/v1/operations/{op_b}/", (401, 404, 200, 200, 200, 200, 200)),
    # support: no plans or prices (customers see the active catalogue)
    ("/api/v1/plans/", (401, 200, 200, 200, 403, 200, 200)),
    ("/api/v1/plans/{plan}/", (401, 200, 200, 200, 403, 200, 200)),
    ("/api/v1/templates/", (401, 200, 200, 200, 200, 200, 200)),
    ("/api/v1/templates/{template}/", (401, 200, 200, 200, 200, 200, 200)),
    ("/api/v1/customers/", (401, 403, 403, 200, 200, 200, 200)),
    ("/api/v1/customers/{cust_b}/", (401, 403, 403, 200, 200, 200, 200)),
    # nodes, pools, the audit log and metrics: administrators and auditors
    ("/api/v1/nodes/", (401, 403, 403, 200, 403, 403, 200)),
    ("/api/v1/nodes/{node}/", (401, 403, 403, 200, 403, 403, 200)),
    ("/api/v1/nodes/{node}/usage/?range=7d", (401, 403, 403, 200, 403, 403, 200)),
    ("/api/v1/ip-pools/", (401, 403, 403, 200, 403, 403, 200)),
    ("/api/v1/ip-pools/{pool}/", (401, 403, 403, 200, 403, 403, 200)),
    ("/api/v1/audit-log/", (401, 403, 403, 200, 403, 403, 200)),
]


@pytest.mark.parametrize("role, path, expected", _matrix(READS))
def test_get_answers_by_role(api_as, world, role, path, expected):
    response = api_as(role).get(fill(path, world))
    assert response.status_code == expected, response.content
    if expected in (401, 403):
        detail = response.json()["detail"]
        assert detail == (NOT_SIGNED_IN if role == "anon" else role_refusal(role)
                          if role in STAFF_ROLES else "only staff can use this endpoint")
    if expected == 404:
        assert response.json() == {"detail": "No VirtualEnvironment matches the given query."} \
            or response.json() == {"detail": "No Operation matches the given query."}


def test_anonymous_gets_401_with_a_token_challenge(api_as):
    response = api_as("anon").get("/api/v1/environments/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token'
    assert response.json() == {"detail": NOT_SIGNED_IN}


@pytest.mark.parametrize("role", ["a", "b"])
def test_a_customer_lists_only_their_own_environments(api_as, world, role):
    body = api_as(role).get("/api/v1/environments/").json()
    own = world["ve_a"] if role == "a" else world["ve_b"]
    assert body["count"] == 1
    assert [ve["veid"] for ve in body["results"]] == [own.veid]
    assert body["results"][0]["owner"] == world[role].pk


@pytest.mark.parametrize("role", ["a", "b"])
def test_a_customer_lists_only_operations_on_their_own_environments(api_as, world, role):
    body = api_as(role).get("/api/v1/operations/").json()
    own = world["op_a"] if role == "a" else world["op_b"]
    assert [op["id"] for op in body["results"]] == [str(own.pk)]


def test_a_customer_cannot_widen_the_list_with_filters(api_as, world):
    """Filtering by B's owner id or B's VEID yields nothing for A, not B's objects."""
    client = api_as("a")
    by_owner = client.get("/api/v1/environments/", {"owner": world["b"].pk}).json()
    by_veid = client.get("/api/v1/operations/", {"environment__veid": world["ve_b"].veid}).json()
    assert by_owner["count"] == 0
    assert by_veid["count"] == 0


def test_staff_lists_everyones_environments_and_operations(api_as, world):
    client = api_as("staff")
    ves = client.get("/api/v1/environments/").json()
    ops = client.get("/api/v1/operations/").json()
    assert {ve["veid"] for ve in ves["results"]} == {world["ve_a"].veid, world["ve_b"].veid}
    assert {op["id"] for op in ops["results"]} == {str(world["op_a"].pk), str(world["op_b"].pk)}


# -- lifecycle actions on B's VPS ---------------------------------------------------------

# (method, path, body, ve_b's state before, statuses for anon, a, b, staff, support, billing,
# auditor): support operates VPSes; billing only suspends; the auditor only reads.
ACTIONS = [
    ("post", "/api/v1/environments/{ve_b}/start/", None, "stopped",
     (401, 404, 202, 202, 202, 403, 403)),
    ("post", "/api/v1/environments/{ve_b}/stop/", None, "running",
     (401, 404, 202, 202, 202, 403, 403)),
    ("post", "/api/v1/environments/{ve_b}/reboot/", None, "running",
     (401, 404, 202, 202, 202, 403, 403)),
    ("post", "/api/v1/environments/{ve_b}/terminate/", {"current_password": PASSWORD},
     "running", (401, 404, 202, 202, 202, 403, 403)),
    ("delete", "/api/v1/environments/{ve_b}/", {"current_password": PASSWORD}, "running",
     (401, 404, 202, 202, 202, 403, 403)),
    ("post", "/api/v1/environments/{ve_b}/reinstall/", {"current_password": PASSWORD},
     "running", (401, 404, 202, 202, 202, 403, 403)),
    ("post", "/api/v1/environments/{ve_b}/password/",
     {"root_password": ROOT_PASSWORD, "current_password": PASSWORD}, "running",
     (401, 404, 202, 202, 202, 403, 403)),
    ("post", "/api/v1/environments/{ve_b}/suspend/", None, "running",
     (401, 404, 403, 202, 202, 202, 403)),
    ("post", "/api/v1/environments/{ve_b}/resume/", None, "suspended",
     (401, 404, 403, 202, 202, 202, 403)),
]
KIND = {"start": "start", "stop": "stop", "reboot": "restart", "terminate": "destroy",
        "reinstall": "reinstall", "password": "password", "suspend": "suspend",
        "resume": "resume"}


def _action_cases():
    for method, path, body, state, statuses in ACTIONS:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        name = name if name in KIND else method.upper()
        for role, expected in zip(ROLES, statuses):
            yield pytest.param(role, method, path, body, state, expected, id=f"{role}-{name}")


@pytest.mark.parametrize("role, method, path, body, state, expected", list(_action_cases()))
def test_lifecycle_action_by_role(api_as, world, role, method, path, body, state, expected):
    ve = world["ve_b"]
    VE.objects.filter(pk=ve.pk).update(actual_state=state)
    client = api_as(role)
    before = counts()
    response = getattr(client, method)(fill(path, world), body, format="json")
    assert response.status_code == expected, response.content
    if expected == 202:
        op = Operation.objects.get(pk=response.json()["id"])
        assert op.environment == ve and op.state == "queued"
        assert response.json()["kind"] == op.kind
        assert counts()["operations"] == before["operations"] + 1
        assert counts()["audit"] == before["audit"] + 1
        return
    if expected == 404:
        assert response.json() == {"detail": "No VirtualEnvironment matches the given query."}
    elif role == "anon":
        assert response.json() == {"detail": NOT_SIGNED_IN}
    elif role in STAFF_ROLES:
        assert response.json() == {"detail": role_refusal(role)}
    else:
        assert response.json() == {"detail": "only staff can do this"}
    assert counts() == before
    ve.refresh_from_db()
    assert (ve.actual_state, ve.desired_state) == (state, "running")


@pytest.mark.parametrize("action", ["start", "stop", "reboot", "terminate", "reinstall",
                                    "password", "suspend", "resume"])
def test_strangers_answer_for_a_bad_body_is_that_of_a_missing_vps(api_as, world, action):
    """An empty body must not make A's answer differ between B's VEID and a free one."""
    client = api_as("a")
    theirs = client.post(f"/api/v1/environments/{world['ve_b'].veid}/{action}/", {}, format="json")
    nobodys = client.post(f"/api/v1/environments/9999/{action}/", {}, format="json")
    assert theirs.status_code == nobodys.status_code
    assert theirs.json() == nobodys.json()


# -- staff-only writes --------------------------------------------------------------------

NEW_PLAN = {"name": "big", "ram_mb": 2048, "monthly_price": "20.00", "templates": ["busybox"]}
NEW_POOL = {"name": "v4b", "network": "203.0.113.0/24", "first": "203.0.113.10",
            "last": "203.0.113.20", "nodes": ["hn1"]}
NEW_CUSTOMER = {"username": "carol", "email": "carol@example.com", "password": PASSWORD,
                "company": "Carol Inc"}

# (method, path, body, statuses for anon, a, b, staff, support, billing, auditor):
# billing keeps plans and customers; templates, nodes and pools are the administrators'.
STAFF_WRITES = [
    ("post", "/api/v1/plans/", NEW_PLAN, (401, 403, 403, 201, 403, 201, 403)),
    ("patch", "/api/v1/plans/{plan}/", {"monthly_price": "6.00"},
     (401, 403, 403, 200, 403, 200, 403)),
    ("put", "/api/v1/plans/{plan}/", dict(NEW_PLAN, name="small"),
     (401, 403, 403, 200, 403, 200, 403)),
    ("delete", "/api/v1/plans/{plan}/", None, (401, 403, 403, 204, 403, 204, 403)),
    ("post", "/api/v1/templates/", {"name": "alpine", "title": "Alpine"},
     (401, 403, 403, 201, 403, 403, 403)),
    ("patch", "/api/v1/templates/{template}/", {"title": "BB"},
     (401, 403, 403, 200, 403, 403, 403)),
    ("post", "/api/v1/customers/", NEW_CUSTOMER, (401, 403, 403, 201, 403, 201, 403)),
    ("patch", "/api/v1/customers/{cust_b}/", {"phone": "+49 1"},
     (401, 403, 403, 200, 403, 200, 403)),
    ("post", "/api/v1/customers/{cust_b}/suspend/", None, (401, 403, 403, 200, 403, 200, 403)),
    ("post", "/api/v1/customers/{cust_b}/unsuspend/", None,
     (401, 403, 403, 200, 403, 200, 403)),
    ("post", "/api/v1/nodes/", {"name": "hn2"}, (401, 403, 403, 201, 403, 403, 403)),
    ("patch", "/api/v1/nodes/{node}/", {"state": "draining"},
     (401, 403, 403, 200, 403, 403, 403)),
    ("post", "/api/v1/ip-pools/", NEW_POOL, (401, 403, 403, 201, 403, 403, 403)),
    ("patch", "/api/v1/ip-pools/{pool}/", {"last": "198.18.0.200"},
     (401, 403, 403, 200, 403, 403, 403)),
    # The pool's addresses are held by the VEs, so even staff are refused (409), not 5xx.
    ("delete", "/api/v1/ip-pools/{pool}/", None, (401, 403, 403, 409, 403, 403, 403)),
    # Extra traffic is sold: administrators and billing.
    ("post", "/api/v1/environments/{ve_b}/traffic/", {"extra_gib": 5},
     (401, 403, 403, 200, 403, 200, 403)),
]


def _staff_write_cases():
    for method, path, body, statuses in STAFF_WRITES:
        for role, expected in zip(ROLES, statuses):
            yield pytest.param(role, method, path, body, expected,
                               id=f"{role}-{method.upper()}-{path}")


@pytest.mark.parametrize("role, method, path, body, expected", list(_staff_write_cases()))
def test_staff_write_by_role(api_as, world, role, method, path, body, expected):
    client = api_as(role)
    before = counts()
    response = getattr(client, method)(fill(path, world), body, format="json")
    assert response.status_code == expected, response.content
    if expected not in (200, 201, 204):
        assert counts() == before
        if role == "anon":
            assert response.json()["detail"] == NOT_SIGNED_IN
        elif expected == 403 and role in STAFF_ROLES:
            assert response.json()["detail"] == role_refusal(role)
        elif expected == 403:
            assert response.json()["detail"] in ("only staff can use this endpoint",
                                                 "only staff can change this")
        else:
            assert "still has addresses in use" in response.json()["detail"]


@pytest.mark.parametrize("role", ["a", "b"])
def test_customer_writes_to_plans_change_nothing(api_as, world, role):
    client = api_as(role)
    client.patch(fill("/api/v1/plans/{plan}/", world), {"ram_mb": 9999}, format="json")
    client.delete(fill("/api/v1/plans/{plan}/", world))
    world["plan"].refresh_from_db()
    assert (world["plan"].ram_mb, world["plan"].active) == (512, True)


def test_customers_see_active_plans_and_templates_only(api_as, world, template):
    Plan.objects.create(name="old", ram_mb=256, monthly_price="1.00", active=False)
    OSTemplate.objects.create(name="retired-os", title="Retired", active=False)
    customer, staff = api_as("a"), api_as("staff")
    assert [p["name"] for p in customer.get("/api/v1/plans/").json()["results"]] == ["small"]
    assert {p["name"] for p in staff.get("/api/v1/plans/").json()["results"]} == {"small", "old"}
    assert [t["name"] for t in customer.get("/api/v1/templates/").json()["results"]] == ["busybox"]
    assert len(staff.get("/api/v1/templates/").json()["results"]) == 2


def test_a_customer_cannot_order_for_another_customer(api_as, world):
    client = api_as("a")
    before = counts()
    response = client.post("/api/v1/environments/", {
        "plan": "small", "template": "busybox", "hostname": "sneaky.example.com",
        "root_password": ROOT_PASSWORD, "customer": world["b"].pk}, format="json")
    # Today 403 "customers order for themselves only"; 400 "Invalid pk" once customer ids
    # stop leaking (see test_a_customer_cannot_probe_for_other_customers_ids).
    assert (response.status_code, response.json()) in [
        (403, {"detail": "customers order for themselves only"}),
        (400, {"customer": [f'Invalid pk "{world["b"].pk}" - object does not exist.']})]
    assert counts() == before


def _audited_cases():
    for method, path, body, statuses in STAFF_WRITES:
        if statuses[ROLES.index("staff")] in (200, 201, 204):
            yield pytest.param(method, path, body, id=f"{method.upper()}-{path}")


@pytest.mark.parametrize("method, path, body", list(_audited_cases()))
def test_every_staff_write_leaves_an_audit_row(api_as, world, method, path, body):
    client = api_as("staff")
    before = AuditLog.objects.count()
    response = getattr(client, method)(fill(path, world), body, format="json")
    assert response.status_code in (200, 201, 204), response.content
    row = AuditLog.objects.order_by("-id").first()
    assert AuditLog.objects.count() == before + 1
    assert row.actor == world["staff"]


def test_deleting_a_template_in_use_is_refused_with_409(api_as, world):
    client = api_as("staff")
    client.raise_request_exception = False
    response = client.delete(fill("/api/v1/templates/{template}/", world))
    assert response.status_code == 409
    assert "in use" in response.json()["detail"]
    assert OSTemplate.objects.filter(pk=world["template"].pk).exists()


def test_deleting_an_unused_template_by_staff_works_and_customers_cannot(api_as, world):
    spare = OSTemplate.objects.create(name="spare", title="Spare")
    assert api_as("a").delete(f"/api/v1/templates/{spare.pk}/").status_code == 403
    assert OSTemplate.objects.filter(pk=spare.pk).exists()
    assert api_as("staff").delete(f"/api/v1/templates/{spare.pk}/").status_code == 204


def test_plan_delete_by_staff_retires_it_and_keeps_its_ves(api_as, world):
    response = api_as("staff").delete(fill("/api/v1/plans/{plan}/", world))
    assert response.status_code == 204
    world["plan"].refresh_from_db()
    assert world["plan"].active is False
    assert world["plan"].environments.count() == 2
    assert AuditLog.objects.filter(action="plan.retire").count() == 1


# -- staff roles: what the matrix does not show -------------------------------------------

def test_a_staff_login_without_a_role_may_do_nothing(api_as, world):
    """Deny by default: is_staff alone (say, ticked in the admin) opens no staff route."""
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient
    nobody = User.objects.create_user("no-role", password=PASSWORD, is_staff=True)
    client = APIClient()
    enrol(nobody)
    verified_login(client, nobody)
    refusal = "this staff login has no role; an administrator must give it one"
    for path in ("/api/v1/customers/", "/api/v1/nodes/", "/api/v1/plans/", "/api/v1/audit-log/"):
        response = client.get(path)
        assert (response.status_code, response.json()["detail"]) == (403, refusal), path
    assert client.get("/api/v1/environments/").json()["count"] == 0
    before = counts()
    response = client.post(fill("/api/v1/environments/{ve_b}/stop/", world))
    assert response.status_code == 404
    assert counts() == before


def test_a_superuser_is_an_administrator_without_a_role_row(api_as, world):
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient
    root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    client = APIClient()
    enrol(root)
    verified_login(client, root)
    assert client.get("/api/v1/nodes/").status_code == 200
    assert client.post("/api/v1/nodes/", {"name": "hn9"}, format="json").status_code == 201


@pytest.mark.parametrize("role, expected", [("support", 202), ("billing", 403),
                                            ("auditor", 403), ("staff", 202)])
def test_ordering_for_a_customer_by_role(api_as, world, role, expected):
    before = counts()
    response = api_as(role).post("/api/v1/environments/", {
        "plan": "small", "template": "busybox", "hostname": "for-b.example.com",
        "root_password": ROOT_PASSWORD, "customer": world["b"].pk}, format="json")
    assert response.status_code == expected, response.content
    if expected == 403:
        assert counts() == before
        assert response.json() == {"detail": role_refusal(role)}


@pytest.mark.parametrize("role, expected", [("support", 403), ("billing", 202),
                                            ("auditor", 403), ("staff", 202)])
def test_changing_a_vpses_plan_by_role(api_as, world, role, expected):
    bigger = Plan.objects.create(name="bigger", ram_mb=1024, disk_gib=10, ipv4_count=1,
                                 ipv6_count=2, monthly_price="9.00")
    VE.objects.filter(pk=world["ve_b"].pk).update(actual_state="stopped")
    before = counts()
    response = api_as(role).post(fill("/api/v1/environments/{ve_b}/plan/", world),
                                 {"plan": bigger.name}, format="json")
    assert response.status_code == expected, response.content
    world["ve_b"].refresh_from_db()
    if expected == 403:
        assert response.json() == {"detail": role_refusal(role)}
        assert counts() == before and world["ve_b"].plan == world["plan"]
    else:
        assert world["ve_b"].plan == bigger


@pytest.mark.parametrize("role, expected", [("anon", 401), ("a", 403), ("support", 403),
                                            ("billing", 403), ("auditor", 200),
                                            ("staff", 200)])
def test_metrics_by_role(api_as, world, role, expected):
    assert api_as(role).get("/metrics").status_code == expected
