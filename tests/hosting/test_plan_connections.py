"""The plan's connection cap reaches the engine as its conntrack limit (issue 14)."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from hosting.plans.models import Plan
from ve import Limits


def test_the_plans_connections_become_the_engines_numconn():
    plan = Plan(name="small", ram_mb=256, monthly_price=Decimal("5"), connections=2000)
    limits = Limits(**plan.engine_limits())
    assert limits.numconn == 2000
    assert Limits(**Plan(name="d", ram_mb=256, monthly_price=1).engine_limits()).numconn == 16384


def test_a_cap_the_engine_would_refuse_is_refused_by_the_plan():
    plan = Plan(name="huge", ram_mb=256, monthly_price=Decimal("5"), connections=(1 << 24) + 1)
    with pytest.raises(ValidationError):
        plan.clean_fields()
