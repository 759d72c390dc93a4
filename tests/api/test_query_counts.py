"""Issue 17: no portal page, staff page or API read asks the database once per row.

Each page is measured twice: over the ``world`` of tests/api/conftest.py (one VPS per
customer) and again after ``grow`` gave the same customers many more VPSes, each
with addresses, operations, traffic, samples, snapshots and backups, and added
customers, nodes, plans, templates, pools and audit rows. The count must not move:
a query per row shows as a difference (the message lists the queries of both runs).
Each page is asked once before the first count, so one-off work (a session's first
read, a cache filled) is not taken for growth.
"""

import ipaddress
import re
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.template.defaultfilters import filesizeformat
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hosting.core import audit, tokens
from hosting.customers.models import Customer
from hosting.environments.models import Backup, OSTemplate, Snapshot, VirtualEnvironment as VE
from hosting.ipam.models import IPAddress, IPPool
from hosting.nodes.models import Node
from hosting.operations.models import Operation
from hosting.plans.models import Plan
from hosting.usage import traffic
from hosting.usage.models import TrafficMonth, UsageSample
from hosting.usage.templatetags.report_format import size

from .helpers import PASSWORD, fill

pytestmark = pytest.mark.django_db

EXTRA_VES = 7  # per customer of the world: 1 VPS becomes 8
EXTRA_CUSTOMERS = 6

# (who, path): pages and API reads, with the ids of the world put in (helpers.fill).
PORTAL = [("a", "/"), ("a", "/order/"), ("a", "/vps/{ve_a}/"), ("a", "/vps/{ve_a}/live/"),
          ("a", "/account/api-keys/")]
# Pages that ask hosting/nodes/placement.py about each node (the nodes page) or each
# plan (the plan page): placement reads every node's VPSes in one query, and the plan
# page reads its node's Room once for all plans.
PER_NODE_OR_PLAN = [("staff", "/staff/nodes/"), ("a", "/vps/{ve_a}/plan/"),
                    ("staff", "/staff/vps/{ve_a}/plan/")]
STAFF_PAGES = [("staff", "/staff/nodes/{node}/"),
               ("staff", "/staff/plans/"), ("staff", "/staff/plans/{plan}/"),
               ("staff", "/staff/templates/"), ("staff", "/staff/customers/"),
               ("staff", "/staff/customers/?q=company"),
               ("staff", "/staff/vps/"), ("staff", "/staff/vps/?q=alice"),
               ("staff", "/staff/vps/?state=running&node=hn1"),
               ("staff", "/staff/operations/"), ("staff", "/staff/operations/?state=succeeded"),
               ("staff", "/staff/audit/"), ("staff", "/staff/api-keys/"),
               ("staff", "/vps/{ve_a}/"), ("staff", "/vps/{ve_a}/live/")]
API = [(who, path) for who in ("a", "staff") for path in (
    "/api/v1/environments/", "/api/v1/environments/?actual_state=running",
    "/api/v1/environments/{ve_a}/", "/api/v1/environments/{ve_a}/snapshots/",
    "/api/v1/environments/{ve_a}/backups/",
    "/api/v1/operations/", "/api/v1/operations/?state=succeeded",
    "/api/v1/operations/?kind=create", "/api/v1/operations/?environment__veid={ve_a}",
    "/api/v1/operations/?state=succeeded&environment__veid={ve_a}",
    "/api/v1/operations/{op_a}/", "/api/v1/plans/", "/api/v1/templates/")] + [
    ("staff", path) for path in (
        "/api/v1/customers/", "/api/v1/nodes/", "/api/v1/ip-pools/", "/api/v1/audit-log/",
        "/api/v1/environments/{ve_a}/seccomp/", "/api/v1/rebalances/")]


def _furnish(ve, staff, tag, first):
    """Operations of every origin (the owner's, staff's, the system's; a running one the
    ``first`` time), a usage sample, a snapshot, a backup and (``first``) its traffic."""
    done, owner = Operation.State.SUCCEEDED, ve.owner.user
    for kind, by in ((Operation.Kind.CREATE, owner), (Operation.Kind.RESTART, owner),
                     (Operation.Kind.SUSPEND, staff), (Operation.Kind.SET, None)):
        Operation.objects.create(environment=ve, kind=kind, state=done, requested_by=by)
    now = timezone.now()
    UsageSample.objects.create(environment=ve, time=now - timedelta(seconds=30 + tag),
                               ram=1 << 20, cpu_ns=0, conntrack=3, conntrack_refused=0)
    Snapshot.objects.create(environment=ve, name=f"s{tag}", created=now, method="reflink")
    Backup.objects.create(environment=ve, backup_id=f"{ve.veid:08x}{tag:08x}" + "0" * 48,
                          created=now, repository="s3:backups", node=ve.node.name)
    if first:
        Operation.objects.create(environment=ve, kind=Operation.Kind.RESTART,
                                 state=Operation.State.RUNNING, requested_by=owner)
        month = traffic.month_of()
        TrafficMonth.objects.create(environment=ve, month=month, rx_bytes=ve.veid, tx_bytes=1)
        TrafficMonth.objects.create(environment=ve, month=month - timedelta(days=1), rx_bytes=5)
    audit.record(owner, "ve.order", ve)
    audit.record(staff, "ve.suspend", ve)


def _new_ve(world, owner, veid):
    """A running VPS of ``owner`` on the world's node, with an address of each pool."""
    ve = VE.objects.create(veid=veid, owner=owner, plan=world["plan"], node=world["node"],
                           template=world["template"], hostname=f"host-{veid}.example.com",
                           actual_state=VE.State.RUNNING)
    offset = veid - 1000  # the pools' ranges hold 150 more v4 addresses from .100 on
    IPAddress.objects.create(pool=world["pool4"], environment=ve,
                             address=str(ipaddress.ip_address("198.18.0.100") + offset))
    IPAddress.objects.create(pool=world["pool6"], environment=ve,
                             address=str(ipaddress.ip_address("fd00::1000") + offset))
    _furnish(ve, world["staff"], 0, first=True)
    return ve


def _add(world, tag, count, ves_each, customers):
    """``count`` more templates, plans, nodes, API keys and history of the world's VPSes;
    ``ves_each`` more VPSes for alice and bob; ``customers`` more with two VPSes each."""
    staff, pools = world["staff"], (world["pool4"], world["pool6"])
    templates = [OSTemplate.objects.create(name=f"extra{tag}-{n}", title=f"Extra {n}")
                 for n in range(count)]
    for n in range(count):
        # bigger than the world's: a customer's plan page checks every step for an upgrade
        plan = Plan.objects.create(name=f"plan{tag}-{n}", ram_mb=1024, disk_gib=20,
                                   ipv4_count=2, ipv6_count=2, monthly_price=Decimal("9"))
        plan.templates.set([world["template"], *templates])
        node = Node.objects.create(name=f"hn{tag}-{n}", state=Node.State.ONLINE,
                                   ram_bytes=8 << 30, cpus=4, disk_bytes=500 << 30)
        for pool in pools:
            pool.nodes.add(node)
        for user in (world["a"].user, staff):
            tokens.issue(user, name=f"key {tag}-{n}")
    IPPool.objects.create(name=f"v4-{tag}", network=f"198.19.{tag}.0/24",
                          first=f"198.19.{tag}.10", last=f"198.19.{tag}.250"
                          ).nodes.add(world["node"])
    owners = [world["a"], world["b"]] * ves_each
    for n in range(customers):
        user = User.objects.create_user(f"cust{tag}-{n}", f"c{tag}-{n}@example.com", PASSWORD)
        owners += [Customer.objects.create(user=user, company=f"Company {tag}-{n}")] * 2
    for n, owner in enumerate(owners):
        _new_ve(world, owner, 1000 + 100 * tag + n)
    for n in range(count):  # the world's own VPSes' pages list more too
        for ve in (world["ve_a"], world["ve_b"]):
            _furnish(ve, staff, 100 * tag + n + 1, first=False)


def seed(world):
    """One of everything: the small run (its lists have a row, so no branch differs)."""
    for ve in (world["ve_a"], world["ve_b"]):
        _furnish(ve, world["staff"], 0, first=True)
    _add(world, 0, count=1, ves_each=0, customers=1)


def grow(world):
    """Many more rows behind every page: what a page must not ask about one by one."""
    _add(world, 1, count=4, ves_each=EXTRA_VES, customers=EXTRA_CUSTOMERS)


def _queries(client, path):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return [query["sql"] for query in captured.captured_queries]


def _clients(page_as, api_as):
    made = {}

    def client(who, path):
        kind = "api" if path.startswith("/api/") else "page"
        if (who, kind) not in made:
            made[who, kind] = (api_as if kind == "api" else page_as)(who)
        return made[who, kind]
    return client


def _measure(world, client, pages):
    """{(who, path): [sql, ...]} of one GET of each page."""
    return {(who, path): _queries(client(who, path), fill(path, world)) for who, path in pages}


def _explain(who, path, small, large):
    """The page, both counts and the queries only the larger run asked (shortened)."""
    asked = Counter(_shape(sql) for sql in small)
    extra = []
    for sql in large:
        if asked[_shape(sql)]:
            asked[_shape(sql)] -= 1
        else:
            extra.append(sql[:300])
    shown = "\n    ".join(extra)
    return f"{who} {path}: {len(small)} -> {len(large)} queries; more:\n    {shown}"


def _shape(sql):
    """A query with its numbers and quoted values blanked, to pair the runs' queries."""
    return re.sub(r"\((\?, )*\?\)", "(?)", re.sub(r"'[^']*'|\b\d+\b", "?", sql))


def _assert_flat(world, page_as, api_as, pages):
    client = _clients(page_as, api_as)
    seed(world)
    _measure(world, client, pages)  # warm up: sessions, caches, content types
    small = _measure(world, client, pages)
    grow(world)
    large = _measure(world, client, pages)
    grown = {page: (small[page], large[page]) for page in pages
             if len(large[page]) != len(small[page])}
    assert not grown, "query counts grow with the rows:\n" + "\n".join(
        _explain(who, path, *runs) for (who, path), runs in grown.items())


def test_portal_pages_ask_as_often_for_many_vpses_as_for_one(world, page_as, api_as):
    _assert_flat(world, page_as, api_as, PORTAL)


def test_staff_pages_ask_as_often_for_many_rows_as_for_few(world, page_as, api_as):
    _assert_flat(world, page_as, api_as, STAFF_PAGES)


def test_api_reads_ask_as_often_for_many_rows_as_for_few(world, page_as, api_as):
    _assert_flat(world, page_as, api_as, API)


def test_pages_that_ask_placement_ask_once_for_every_node_and_plan(world, page_as, api_as):
    _assert_flat(world, page_as, api_as, PER_NODE_OR_PLAN)


def test_the_lists_really_grew(world, api_as):
    """The test above means something only if the larger world shows in the lists."""
    seed(world)
    grow(world)
    client = api_as("a")
    listed = client.get("/api/v1/environments/").json()
    assert listed["count"] == 1 + EXTRA_VES
    assert client.get("/api/v1/operations/").json()["count"] > 5 * EXTRA_VES


# -- what the batched reads show is still right ---------------------------------------------

def test_the_vps_lists_show_each_vpss_own_traffic(world, page_as, api_as):
    seed(world)
    grow(world)
    month = traffic.month_of()
    expected = {row.environment.veid: row for row in TrafficMonth.objects.filter(month=month)}
    listed = api_as("staff").get("/api/v1/environments/").json()["results"]
    assert len(listed) > 20
    for ve in listed:
        row = expected[ve["veid"]]
        assert (ve["traffic"]["rx_bytes"], ve["traffic"]["tx_bytes"]) == (row.rx_bytes,
                                                                          row.tx_bytes)
        assert ve["traffic"]["month"] == month.strftime("%Y-%m")
    ves = list(VE.objects.filter(owner__user__username="cust1-0"))
    assert len(ves) == 2
    for gib, ve in enumerate(ves, start=5):  # sizes the page shows apart
        TrafficMonth.objects.filter(environment=ve, month=month).update(rx_bytes=gib << 30)
    page = page_as("staff").get("/staff/vps/?q=cust1-0").content.decode()
    for gib, ve in enumerate(ves, start=5):  # each row carries its own VPS's month
        row = re.search(rf'<td><a href="/vps/{ve.veid}/">{ve.veid}</a>.*?</tr>', page, re.S)
        assert f"<td>{size((gib << 30) + 1)}" in row.group(0)


def test_a_vps_without_traffic_this_month_shows_zero(world, api_as):
    TrafficMonth.objects.create(environment=world["ve_a"], month=date(2001, 1, 1),
                                rx_bytes=99)
    traffic_now = api_as("a").get(f"/api/v1/environments/{world['ve_a'].veid}/").json()
    assert traffic_now["traffic"]["used_bytes"] == 0
    listed = api_as("a").get("/api/v1/environments/").json()["results"]
    assert listed[0]["traffic"]["used_bytes"] == 0


def test_the_customers_page_comes_a_page_at_a_time_with_each_ones_totals(
        world, page_as, monkeypatch):
    from hosting.core import paging
    seed(world)
    grow(world)
    VE.objects.filter(owner=world["a"]).update(backup_bytes=1024)
    monkeypatch.setattr(paging, "PAGE_SIZE", 3)
    client = page_as("staff")
    first = client.get("/staff/customers/").content.decode()
    assert first.count('class="backup-bytes"') == 3
    assert "page 1 of" in first
    alice = client.get("/staff/customers/?q=alice").content.decode()
    assert alice.count('class="backup-bytes"') == 1
    count = VE.objects.filter(owner=world["a"]).count()  # terminated ones too, as before
    assert f'?q=alice">{count}</a>' in alice
    assert f'class="backup-bytes">{filesizeformat(count * 1024)}</td>' in alice
    assert "No customer matches." in client.get("/staff/customers/?q=nobody").content.decode()


def test_a_nodes_page_lists_its_first_vpses_and_links_to_the_rest(world, page_as,
                                                                 monkeypatch):
    from hosting.nodes import views
    seed(world)
    grow(world)
    monkeypatch.setattr(views, "LISTED_VES", 4)
    page = page_as("staff").get(f"/staff/nodes/{world['node'].pk}/").content.decode()
    live = VE.objects.filter(node=world["node"]).live().count()
    assert f"4 of {live} shown" in page
    assert f'href="/staff/vps/?node={world["node"].name}"' in page


def test_a_host_name_is_taken_whatever_its_case(world):
    assert VE.objects.named("WEB-A.Example.COM").live().get() == world["ve_a"]
    VE.objects.filter(pk=world["ve_a"].pk).update(actual_state=VE.State.DESTROYED)
    assert not VE.objects.named("web-a.example.com").live().exists()
