"""VEs, IP pools and operations: the rules the database itself enforces."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from hosting.customers.models import Customer
from hosting.environments.models import OSTemplate, VirtualEnvironment
from hosting.ipam.models import IPPool
from hosting.nodes.models import Node
from hosting.operations.models import Operation
from hosting.plans.models import Plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def ve():
    owner = Customer.objects.create(user=User.objects.create_user("alice"))
    plan = Plan.objects.create(name="S", ram_mb=256, monthly_price=Decimal("3"))
    node = Node.objects.create(name="hn1")
    template = OSTemplate.objects.create(name="busybox", title="BusyBox")
    return VirtualEnvironment.objects.create(veid=101, owner=owner, plan=plan, node=node,
                                             template=template, hostname="web1")


def test_ve_fields_refuse_what_the_engine_refuses(ve):
    ve.veid, ve.hostname = 99, "bad host"
    with pytest.raises(ValidationError) as caught:
        ve.full_clean()
    assert {"veid", "hostname"} <= set(caught.value.message_dict)
    assert "bad VEID" in caught.value.message_dict["veid"][0]


def test_a_hostname_is_taken_only_by_live_ves(ve):
    clone = dict(owner=ve.owner, plan=ve.plan, node=ve.node, template=ve.template)
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualEnvironment.objects.create(veid=102, hostname="web1", **clone)
    ve.actual_state = VirtualEnvironment.State.DESTROYED
    ve.save()
    assert VirtualEnvironment.objects.create(veid=102, hostname="web1", **clone).pk


def test_one_unfinished_operation_per_ve(ve):
    """A second operation while one is queued or running is refused by the database."""
    first = Operation.objects.create(kind=Operation.Kind.START, environment=ve)
    with pytest.raises(IntegrityError), transaction.atomic():
        Operation.objects.create(kind=Operation.Kind.STOP, environment=ve)
    first.state = Operation.State.SUCCEEDED
    first.save()
    assert first.is_finished
    assert Operation.objects.create(kind=Operation.Kind.STOP, environment=ve).state == "queued"


def test_idempotency_keys_are_unique(ve):
    Operation.objects.create(kind="start", environment=ve, idempotency_key="k1",
                             state=Operation.State.SUCCEEDED)
    with pytest.raises(IntegrityError), transaction.atomic():
        Operation.objects.create(kind="stop", environment=ve, idempotency_key="k1")


@pytest.mark.parametrize("fields, bad_field", [
    ({"network": "198.18.0.0/33"}, "network"),
    ({"first": "198.19.0.1"}, "first"),
    ({"gateway": "10.0.0.1"}, "gateway"),
    ({"first": "198.18.0.20", "last": "198.18.0.10"}, "last"),
])
def test_ip_pool_ranges_are_checked(fields, bad_field):
    pool = IPPool(name="p", network="198.18.0.0/24", gateway="198.18.0.1",
                  first="198.18.0.10", last="198.18.0.200")
    pool.full_clean()
    assert pool.version == 4
    for name, value in fields.items():
        setattr(pool, name, value)
    with pytest.raises(ValidationError) as caught:
        pool.full_clean()
    assert bad_field in caught.value.message_dict
