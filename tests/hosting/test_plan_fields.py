"""One list of plan fields (hosting/plans/fields.py) for the staff form and the API."""

from hosting.plans.api import PlanSerializer
from hosting.plans.fields import EDITABLE
from hosting.plans.models import Plan
from hosting.plans.views import PlanForm


def test_form_and_api_show_the_same_plan_fields():
    assert list(PlanForm().fields) == list(EDITABLE)
    assert list(PlanSerializer().fields) == ["id", *EDITABLE]


def test_every_field_staff_can_set_is_listed():
    """A new plan field that is not in EDITABLE would be silently missing from both."""
    settable = {f.name for f in Plan._meta.get_fields()
                if getattr(f, "editable", False) and not f.auto_created}
    assert settable - set(EDITABLE) == set()
