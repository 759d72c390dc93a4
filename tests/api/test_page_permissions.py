"""Who may open which server-rendered page: anonymous, customer A, customer B and staff
of each role (``staff`` is an administrator; support, billing, auditor: roles.py).

As in the API tests the VPS belongs to B, so A is the stranger who must get
404 (the page never confirms someone else's VPS exists) and write nothing.
Anonymous visitors are sent to /login/; customers get 403 on /staff/ pages.
"""

import re

import pytest

from hosting.customers.models import Customer
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations.models import Operation

from tests.staffing import enrol, totp, verified_login

from .helpers import PASSWORD, ROOT_PASSWORD, assert_login_redirect, counts, fill, text

pytestmark = pytest.mark.django_db

ROLES = ("anon", "a", "b", "staff", "support", "billing", "auditor")
STAFF = ("staff", "support", "billing", "auditor")
LOGIN = "login"  # expected "status" meaning: redirected to the sign-in page


# -- customer portal ----------------------------------------------------------------------

PORTAL_GETS = [  # anon, a, b, staff, support, billing, auditor
    ("/", (LOGIN, 200, 200, 302, 302, 302, 302)),  # staff are sent on to /staff/
    ("/order/", (LOGIN, 200, 200, 200, 200, 200, 200)),
    ("/vps/{ve_b}/", (LOGIN, 404, 200, 200, 200, 200, 200)),
    ("/vps/{ve_b}/live/", (LOGIN, 404, 200, 200, 200, 200, 200)),
    ("/account/api-keys/", (LOGIN, 200, 200, 200, 200, 200, 200)),  # one's own keys
]


def _cases(table):
    return [pytest.param(role, path, statuses[i], id=f"{role}-{path}")
            for path, statuses in table for i, role in enumerate(ROLES)]


@pytest.mark.parametrize("role, path, expected", _cases(PORTAL_GETS))
def test_portal_page_by_role(page_as, world, role, path, expected):
    response = page_as(role).get(fill(path, world))
    if expected == LOGIN:
        assert_login_redirect(response)
        return
    assert response.status_code == expected
    if expected == 200 and "{ve_b}" in path:
        assert world["ve_b"].hostname in text(response) or "198.18.0.11" in text(response)


def test_staff_home_redirects_to_the_staff_pages(page_as, world):
    response = page_as("staff").get("/")
    assert response["Location"] == "/staff/"


@pytest.mark.parametrize("role", ["a", "b"])
def test_my_vpses_page_lists_only_my_own(page_as, world, role):
    page = text(page_as(role).get("/"))
    mine, theirs = (world["ve_a"], world["ve_b"]) if role == "a" else (world["ve_b"], world["ve_a"])
    assert mine.hostname in page
    assert theirs.hostname not in page


def test_the_live_fragment_shows_the_owners_addresses(page_as, world):
    page = text(page_as("b").get(fill("/vps/{ve_b}/live/", world)))
    assert "198.18.0.11" in page and "198.18.0.10" not in page


# (path, form data, ve_b's state, statuses for anon, a, b, staff, support, billing, auditor)
PORTAL_POSTS = [
    ("/vps/{ve_b}/start/", {}, "stopped", (LOGIN, 404, 302, 302, 302, 403, 403)),
    ("/vps/{ve_b}/stop/", {}, "running", (LOGIN, 404, 302, 302, 302, 403, 403)),
    ("/vps/{ve_b}/reboot/", {}, "running", (LOGIN, 404, 302, 302, 302, 403, 403)),
    ("/vps/{ve_b}/terminate/", {"current_password": PASSWORD}, "running",
     (LOGIN, 404, 302, 302, 302, 403, 403)),
    ("/vps/{ve_b}/password/", {"current_password": PASSWORD, "root_password": ROOT_PASSWORD},
     "running", (LOGIN, 404, 302, 302, 302, 403, 403)),
    ("/vps/{ve_b}/reinstall/", {"current_password": PASSWORD, "template": "{template}"},
     "running", (LOGIN, 404, 302, 302, 302, 403, 403)),
    # Staff only: the owner is refused with 403, a stranger still sees nothing (404).
    ("/vps/{ve_b}/suspend/", {}, "running", (LOGIN, 404, 403, 302, 302, 302, 403)),
    ("/vps/{ve_b}/resume/", {}, "suspended", (LOGIN, 404, 403, 302, 302, 302, 403)),
    ("/vps/{ve_b}/explode/", {}, "running", (LOGIN, 404, 404, 404, 404, 404, 404)),
]


def _post_cases():
    for path, data, state, statuses in PORTAL_POSTS:
        for role, expected in zip(ROLES, statuses):
            yield pytest.param(role, path, data, state, expected,
                               id=f"{role}-{path.rstrip('/').rsplit('/', 1)[-1]}")


@pytest.mark.parametrize("role, path, data, state, expected", list(_post_cases()))
def test_portal_action_by_role(page_as, world, role, path, data, state, expected):
    ve = world["ve_b"]
    VE.objects.filter(pk=ve.pk).update(actual_state=state)
    data = {key: fill(value, world) for key, value in data.items()}
    if "current_password" in data and role in STAFF:  # staff sign in with two factors
        data["otp_code"] = totp(world[role].totp_device.key)
    client = page_as(role)
    before = counts()
    response = client.post(fill(path, world), data)
    if expected == 302:
        assert response.status_code == 302, text(response)
        assert response["Location"] == f"/vps/{ve.veid}/"
        op = Operation.objects.get(environment=ve, state=Operation.State.QUEUED)
        assert op.requested_by == (world[role] if role in STAFF else ve.owner.user)
        assert counts()["operations"] == before["operations"] + 1
        return
    if expected == LOGIN:
        assert_login_redirect(response)
    else:
        assert response.status_code == expected
    assert counts() == before
    assert not Operation.objects.filter(environment=ve, state=Operation.State.QUEUED).exists()


@pytest.mark.parametrize("path", ["/vps/{ve_b}/reboot/", "/vps/{ve_b}/password/",
                                  "/vps/{ve_b}/reinstall/"])
def test_portal_actions_refuse_get(page_as, world, path):
    assert page_as("b").get(fill(path, world)).status_code == 405


# -- staff pages --------------------------------------------------------------------------

# (path, statuses for staff (administrator), support, billing, auditor); anonymous visitors
# are sent to sign in and customers get 403 on every one.
STAFF_GETS = [
    ("/staff/nodes/", (200, 403, 403, 200)),
    ("/staff/nodes/{node}/", (200, 403, 403, 200)),
    ("/staff/plans/", (200, 403, 200, 200)),
    ("/staff/plans/new/", (200, 403, 200, 200)),
    ("/staff/plans/{plan}/", (200, 403, 200, 200)),
    ("/staff/templates/", (200, 200, 200, 200)),
    ("/staff/customers/", (200, 200, 200, 200)),
    ("/staff/vps/", (200, 200, 200, 200)),
    ("/staff/vps/{ve_b}/plan/", (200, 200, 200, 200)),
    ("/staff/operations/", (200, 200, 200, 200)),
    ("/staff/audit/", (200, 403, 403, 200)),
    ("/staff/api-keys/", (200, 403, 403, 200)),
    ("/staff/reports/overcommit/", (200, 403, 403, 200)),
    ("/staff/reports/overcommit/?format=csv&table=plans", (200, 403, 403, 200)),
]


def _staff_get_cases():
    for path, statuses in STAFF_GETS:
        for role in ROLES:
            expected = (LOGIN if role == "anon" else 403 if role in ("a", "b")
                        else statuses[STAFF.index(role)])
            yield pytest.param(role, path, expected, id=f"{role}-{path}")


@pytest.mark.parametrize("role, path, expected", list(_staff_get_cases()))
def test_staff_page_by_role(page_as, world, role, path, expected):
    response = page_as(role).get(fill(path, world))
    if expected == LOGIN:
        assert_login_redirect(response)
    else:
        assert response.status_code == expected


@pytest.mark.parametrize("role, page, expected", [
    ("anon", "/staff/nodes/", LOGIN), ("a", "/staff/nodes/", 403),
    ("staff", "/staff/nodes/", 200), ("auditor", "/staff/nodes/", 200),
    ("support", "/staff/vps/", 200), ("billing", "/staff/vps/", 200)])
def test_staff_root_redirect_ends_in_the_same_verdict(page_as, world, role, page, expected):
    """/staff/ only redirects: to the first page the role may open, or to /staff/nodes/,
    which is guarded."""
    client = page_as(role)
    first = client.get("/staff/")
    assert (first.status_code, first["Location"]) == (302, page)
    final = client.get(first["Location"])
    if expected == LOGIN:
        assert_login_redirect(final)
    else:
        assert final.status_code == expected


def test_the_node_page_shows_free_and_allocated_disk(page_as, world):
    node = world["node"]
    node.disk_free_bytes = 123 << 30
    node.save(update_fields=["disk_free_bytes"])
    page = text(page_as("staff").get(fill("/staff/nodes/{node}/", world)))
    # Two live VEs of the world's plan are allocated on the node.
    allocated = 2 * world["plan"].disk_gib
    # Binary sizes carry IEC names (issue 13: "GB" labelled GiB figures).
    assert "123.0 GiB free" in page and f"{allocated}.0 GiB allocated to VPSes" in page
    assert not re.search(r"\bGB\b", page)  # a word: CSRF tokens may hold "GB"


@pytest.mark.parametrize("data, error", [
    ({"name": "../etc", "title": "x"}, "bad template name"),
    ({"name": "busybox", "title": "again"}, "already exists"),
    ({"name": "", "title": "x"}, "required"),
])
def test_a_bad_template_is_refused_and_nothing_is_written(page_as, world, data, error):
    from hosting.environments.models import OSTemplate
    before = counts()
    response = page_as("staff").post("/staff/templates/", data)
    assert response.status_code == 400 and error in text(response)
    assert counts() == before and OSTemplate.objects.count() == 1


def test_staff_vps_list_shows_every_customers_vps(page_as, world):
    page = text(page_as("staff").get("/staff/vps/"))
    assert world["ve_a"].hostname in page and world["ve_b"].hostname in page


PLAN_FORM = {"name": "small", "ram_mb": 1024, "swap_mb": 0, "cpu_units": 1000, "cpu_limit_pct": 0,
             "cpus": 0, "processes": 256, "disk_gib": 10, "inodes": 200000, "io_weight": 0,
             "disk_read_mbps": 0, "disk_write_mbps": 50, "disk_read_iops": 0,
             "disk_write_iops": 0, "connections": 16384, "interfaces": 128,
             "snapshots": 0, "snapshot_gib": 0, "backups_daily": 0, "backups_weekly": 0,
             "bandwidth_gib": 1000, "port_speed_mbit": 100, "ipv4_count": 1, "ipv6_count": 2,
             "monthly_price": "5.00", "over_quota": "throttle", "throttled_speed_mbit": 1,
             "active": "on"}


def _state(world):
    from hosting.environments.models import OSTemplate
    world["plan"].refresh_from_db()
    world["b"].refresh_from_db()
    world["template"].refresh_from_db()
    return {"plan_active": world["plan"].active, "ram_mb": world["plan"].ram_mb,
            "b_status": world["b"].status, "template_active": world["template"].active,
            "template_shared": world["template"].share_files,
            "templates": OSTemplate.objects.count(),
            "b_seccomp": VE.objects.get(pk=world["ve_b"].pk).seccomp_allow}


UNCHANGED = {"plan_active": True, "ram_mb": 512, "b_status": Customer.Status.ACTIVE,
             "template_active": True, "template_shared": False, "templates": 1,
             "b_seccomp": None}

# (path, data, what a staff POST changes, statuses for anon, a, b, staff, support, billing,
# auditor)
STAFF_POSTS = [
    ("/staff/plans/{plan}/retire/", {}, {"plan_active": False},
     (LOGIN, 403, 403, 302, 403, 302, 403)),
    ("/staff/customers/{cust_b}/suspended/", {}, {"b_status": Customer.Status.SUSPENDED},
     (LOGIN, 403, 403, 302, 403, 302, 403)),
    ("/staff/plans/{plan}/", PLAN_FORM, {"ram_mb": 1024}, (LOGIN, 403, 403, 302, 403, 302, 403)),
    ("/staff/templates/{template}/retire/", {}, {"template_active": False},
     (LOGIN, 403, 403, 302, 403, 403, 403)),
    ("/staff/templates/{template}/share/", {}, {"template_shared": True},
     (LOGIN, 403, 403, 302, 403, 403, 403)),
    ("/staff/templates/", {"name": "debian-12", "title": "Debian 12"}, {"templates": 2},
     (LOGIN, 403, 403, 302, 403, 403, 403)),
    # relaxing a VPS's seccomp filter: administrators only (roles.py "seccomp.manage")
    ("/staff/vps/{ve_b}/seccomp/", {"seccomp_allow": ["keyring"]}, {"b_seccomp": "keyring"},
     (LOGIN, 403, 403, 302, 403, 403, 403)),
]


def _staff_post_cases():
    for path, data, change, statuses in STAFF_POSTS:
        for role, expected in zip(ROLES, statuses):
            yield pytest.param(role, path, data, change, expected, id=f"{role}-{path}")


@pytest.mark.parametrize("role, path, data, change, expected", list(_staff_post_cases()))
def test_staff_form_post_by_role(page_as, world, role, path, data, change, expected):
    client = page_as(role)
    before = counts()
    response = client.post(fill(path, world), data)
    if expected == 302:
        assert response.status_code == 302, text(response)
        assert counts()["audit"] > before["audit"]
        assert _state(world) == dict(UNCHANGED, **change)
        return
    if expected == LOGIN:
        assert_login_redirect(response)
    else:
        assert response.status_code == 403
    assert counts() == before
    assert _state(world) == UNCHANGED


# -- staff roles: the pages show what a role may do ---------------------------------------

NAV = {"Nodes": "/staff/nodes/", "Plans": "/staff/plans/", "Customers": "/staff/customers/",
       "Audit log": "/staff/audit/", "Keys": "/staff/api-keys/", "Admin": "/admin/"}


@pytest.mark.parametrize("role, shown", [
    ("staff", {"Nodes", "Plans", "Customers", "Audit log", "Keys", "Admin"}),
    ("support", {"Customers"}),
    ("billing", {"Plans", "Customers"}),
    ("auditor", {"Nodes", "Plans", "Customers", "Audit log", "Keys"}),
])
def test_the_navigation_links_only_the_pages_a_role_may_open(page_as, world, role, shown):
    page = text(page_as(role).get("/staff/vps/"))
    assert {name for name, url in NAV.items() if f'href="{url}"' in page} == shown


@pytest.mark.parametrize("role, forms, plan_button, buttons", [
    ("staff", True, True, {"start", "stop", "reboot", "suspend", "resume", "terminate"}),
    ("support", True, False, {"start", "stop", "reboot", "suspend", "resume", "terminate"}),
    ("billing", False, True, {"suspend", "resume"}),
    ("auditor", False, False, set()),
])
def test_the_vps_page_offers_what_the_role_may_do(page_as, world, role, forms, plan_button,
                                                   buttons):
    client = page_as(role)
    page = text(client.get(fill("/vps/{ve_b}/", world)))
    assert ('id="password-form"' in page) == forms
    assert ('id="reinstall-form"' in page) == forms
    assert ('id="btn-plan"' in page) == plan_button
    live = text(client.get(fill("/vps/{ve_b}/live/", world)))
    offered = {name for name in ("start", "stop", "reboot", "suspend", "resume", "terminate")
               if f'id="btn-{name}"' in live}
    assert offered == buttons


@pytest.mark.parametrize("role, expected", [("staff", 200), ("support", 302), ("billing", 302),
                                            ("auditor", 302), ("a", 302)])
def test_only_administrators_enter_the_admin(page_as, world, role, expected):
    response = page_as(role).get("/admin/")
    assert response.status_code == expected
    if expected == 302:
        assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("role, expected", [("staff", 302), ("billing", 302),
                                            ("support", 403), ("auditor", 403)])
def test_staff_plan_change_page_post_by_role(page_as, world, role, expected):
    from hosting.plans.models import Plan
    bigger = Plan.objects.create(name="bigger", ram_mb=1024, disk_gib=10, ipv4_count=1,
                                 ipv6_count=2, monthly_price="9.00")
    VE.objects.filter(pk=world["ve_b"].pk).update(actual_state="stopped")
    response = page_as(role).post(fill("/staff/vps/{ve_b}/plan/", world), {"plan": "bigger"})
    assert response.status_code == expected
    world["ve_b"].refresh_from_db()
    assert (world["ve_b"].plan == bigger) == (expected == 302)


def test_a_staff_login_without_a_role_gets_403_on_every_staff_page(world):
    from django.contrib.auth.models import User
    from django.test import Client
    client = Client()
    nobody = User.objects.create_user("no-role", password=PASSWORD, is_staff=True)
    enrol(nobody)
    verified_login(client, nobody)
    for path, _ in STAFF_GETS:
        assert client.get(fill(path, world)).status_code == 403, path
    assert client.get(fill("/vps/{ve_b}/", world)).status_code == 404
