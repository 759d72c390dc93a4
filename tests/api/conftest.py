"""Fixtures for the REST API and portal tests: two customers, staff, one node, pools, VEs.

Nothing here runs Celery: the tests run inside pytest-django's per-test
transaction, so ``transaction.on_commit`` callbacks (the dispatch to a node's
queue) never fire unless a test captures and runs them on purpose.
"""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from hosting.core import tokens
from hosting.customers.models import Customer
from hosting.environments.models import OSTemplate, VirtualEnvironment
from hosting.ipam.models import IPAddress, IPPool
from hosting.nodes.models import Node
from hosting.operations.models import Operation
from hosting.plans.models import Plan

from tests.staffing import make_staff, verified_login

from .helpers import PASSWORD


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2 with its default rounds would make every login take ~0.3 s."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# -- people -------------------------------------------------------------------------------

@pytest.fixture
def staff(db):
    """An administrator (the role every staff login had before roles)."""
    return make_staff("staffer", PASSWORD, email="staff@example.com")


@pytest.fixture
def staff_roles(db):
    """One staff login of each other role: support, billing, auditor (roles.py)."""
    return {role: make_staff(f"{role}-1", PASSWORD, role=role)
            for role in ("support", "billing", "auditor")}


def _customer(username, company):
    user = User.objects.create_user(username, f"{username}@example.com", PASSWORD)
    return Customer.objects.create(user=user, company=company)


@pytest.fixture
def customer_a(db):
    return _customer("alice", "Alice Ltd")


@pytest.fixture
def customer_b(db):
    return _customer("bob", "Bob GmbH")


# -- infrastructure -----------------------------------------------------------------------

@pytest.fixture
def node(db):
    return Node.objects.create(name="hn1", state=Node.State.ONLINE, ram_bytes=8 << 30, cpus=4,
                               disk_bytes=500 << 30)


@pytest.fixture
def template(db):
    return OSTemplate.objects.create(name="busybox", title="BusyBox")


@pytest.fixture
def plan(db, template):
    plan = Plan.objects.create(name="small", ram_mb=512, disk_gib=10, ipv4_count=1,
                               ipv6_count=2, monthly_price=Decimal("5.00"))
    plan.templates.set([template])
    return plan


@pytest.fixture
def pool4(db, node):
    pool = IPPool.objects.create(name="v4", network="198.18.0.0/24", gateway="198.18.0.1",
                                 first="198.18.0.10", last="198.18.0.250")
    pool.nodes.add(node)
    return pool


@pytest.fixture
def pool6(db, node):
    pool = IPPool.objects.create(name="v6", network="fd00::/64", gateway="fd00::1",
                                 first="fd00::10", last="fd00::ffff")
    pool.nodes.add(node)
    return pool


def _ve(veid, owner, plan, node, template, hostname, address4, address6, pool4, pool6):
    ve = VirtualEnvironment.objects.create(
        veid=veid, owner=owner, plan=plan, node=node, template=template, hostname=hostname,
        desired_state=VirtualEnvironment.State.RUNNING,
        actual_state=VirtualEnvironment.State.RUNNING)
    IPAddress.objects.create(pool=pool4, address=address4, environment=ve)
    IPAddress.objects.create(pool=pool6, address=address6, environment=ve)
    # A finished operation each, so operation lists have something per owner.
    Operation.objects.create(environment=ve, kind=Operation.Kind.CREATE,
                             state=Operation.State.SUCCEEDED, requested_by=owner.user)
    return ve


@pytest.fixture
def ve_a(customer_a, plan, node, template, pool4, pool6):
    return _ve(101, customer_a, plan, node, template, "web-a.example.com",
               "198.18.0.10", "fd00::10", pool4, pool6)


@pytest.fixture
def ve_b(customer_b, plan, node, template, pool4, pool6):
    return _ve(102, customer_b, plan, node, template, "web-b.example.com",
               "198.18.0.11", "fd00::11", pool4, pool6)


@pytest.fixture
def world(staff, staff_roles, customer_a, customer_b, node, template, plan, pool4, pool6, ve_a,
          ve_b):
    """Everything at once, with the ids the URL tables refer to."""
    return {
        "staff": staff, **staff_roles, "a": customer_a, "b": customer_b, "node": node,
        "template": template,
        "plan": plan, "pool4": pool4, "pool6": pool6, "ve_a": ve_a, "ve_b": ve_b,
        "op_a": ve_a.operations.get(), "op_b": ve_b.operations.get(),
    }


# -- clients ------------------------------------------------------------------------------

def _user_of(world, role):
    people = {"staff": world["staff"], "a": world["a"].user, "b": world["b"].user}
    return people[role] if role in people else world[role]


@pytest.fixture
def api_as(world):
    """``api_as(role)``: a DRF test client signed in by session as anon/a/b/staff or
    support/billing/auditor (staff of those roles)."""
    def make(role):
        client = APIClient()
        if role != "anon":
            verified_login(client, _user_of(world, role))
        return client
    return make


@pytest.fixture
def page_as(world):
    """``page_as(role)``: a Django test client signed in as anon/a/b/staff/support/...."""
    def make(role):
        client = Client()
        if role != "anon":
            verified_login(client, _user_of(world, role))
        return client
    return make


@pytest.fixture
def token_client():
    """``token_client(user)``: a DRF client that authenticates with ``Authorization: Token``."""
    def make(user):
        client = APIClient(enforce_csrf_checks=True)
        client.credentials(HTTP_AUTHORIZATION=f"Token {tokens.issue(user)[1]}")
        return client
    return make


