"""Domain models of the dashboard: plans, nodes, customers, the audit log."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from hosting.core.models import AuditLog
from hosting.customers.models import Customer
from hosting.nodes.models import Node
from hosting.plans.models import Plan

pytestmark = pytest.mark.django_db


def test_plan_limits_reach_the_engine_in_its_own_terms():
    """A plan's limits become the engine's options, which the engine's Limits accept."""
    from ve.config import Limits
    plan = Plan.objects.create(name="VPS S", ram_mb=512, swap_mb=256, cpu_units=1000,
                               cpu_limit_pct=50, cpus=1, processes=256,
                               monthly_price=Decimal("5.00"))
    limits = Limits(**plan.engine_limits())
    assert (limits.ram, limits.swap, limits.cpulimit) == (512 << 20, 256 << 20, 50)


def test_plan_refuses_limits_the_engine_would_refuse():
    plan = Plan(name="bad", ram_mb=0, processes=3, cpu_units=1, monthly_price=Decimal("-1"))
    with pytest.raises(ValidationError) as caught:
        plan.full_clean()
    assert {"ram_mb", "processes", "cpu_units", "monthly_price"} <= set(caught.value.message_dict)


def test_node_names_its_queue_and_refuses_names_a_queue_cannot_have():
    assert Node(name="hn1").queue == "node.hn1"
    with pytest.raises(ValidationError):
        Node(name="Bad Name!").full_clean()


def test_customer_status():
    customer = Customer.objects.create(user=User.objects.create_user("alice"), company="Acme")
    assert customer.is_active and str(customer) == "Acme"
    customer.status = Customer.Status.SUSPENDED
    assert not customer.is_active


def test_audit_log_is_append_only():
    entry = AuditLog.objects.create(action="plan.create", object_type="plan", object_id="1")
    with pytest.raises(TypeError):
        entry.save()
    with pytest.raises(TypeError):
        entry.delete()
    with pytest.raises(TypeError):
        AuditLog.objects.all().delete()
    with pytest.raises(TypeError):
        AuditLog.objects.update(action="x")
    assert AuditLog.objects.get().action == "plan.create"
