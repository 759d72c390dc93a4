"""The plan's interface cap reaches the engine as numnetif (issue 14)."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from hosting.environments import services
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor
from hosting.operations.models import Operation
from hosting.plans import fields
from hosting.plans.models import Plan
from ve import Limits
from ve.config import DEFAULT_NUMNETIF


def test_the_plans_interfaces_become_the_engines_numnetif():
    plan = Plan(name="small", ram_mb=256, monthly_price=Decimal("5"), interfaces=40)
    assert Limits(**plan.engine_limits()).numnetif == 40
    default = Plan(name="d", ram_mb=256, monthly_price=1)
    assert default.interfaces == DEFAULT_NUMNETIF  # a plan sells what the engine defaults to
    assert Limits(**default.engine_limits()).numnetif == DEFAULT_NUMNETIF
    assert "interfaces" in fields.EDITABLE  # staff form and API


def test_a_cap_the_engine_would_refuse_is_refused_by_the_plan():
    plan = Plan(name="huge", ram_mb=256, monthly_price=Decimal("5"), interfaces=65537)
    with pytest.raises(ValidationError):
        plan.clean_fields()


@pytest.mark.django_db
def test_a_plan_change_of_interfaces_reaches_the_running_ve(
        catalogue, node_run_dir, engine, django_capture_on_commit_callbacks):
    from hosting.plans import services as plans
    with django_capture_on_commit_callbacks(execute=False):
        op = services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                            "nif1.example.com", catalogue["user"], root_password="root-pass-123")
    executor.execute(op.pk, engine)
    ve = VE.objects.get(pk=Operation.objects.get(pk=op.pk).environment_id)
    assert engine.config(ve.veid).limits.numnetif == DEFAULT_NUMNETIF
    plan = catalogue["plan"]
    before = plan.engine_limits()
    plan.interfaces = 24
    with django_capture_on_commit_callbacks(execute=False):
        (change,) = plans.save(plan, catalogue["user"], before=before)
    executor.execute(change.pk, engine)
    assert Operation.objects.get(pk=change.pk).state == "succeeded"
    assert engine.config(ve.veid).limits.numnetif == 24
    assert engine.status(ve.veid).state == "running"
