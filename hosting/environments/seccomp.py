"""A VPS's seccomp override: staff relax (or tighten) its filter apart from its plan.

The override is stored on the VPS (null follows the plan) and reaches its
node as a "set" operation (runners.set_limits passes it to ``Engine.set``).
The VE's init installs the filter when it starts, so a running VPS gets the
new one at its next reboot, or at once when the request asks for a reboot.
Administrators only (roles.py "seccomp.manage"); customers never see it.
"""

from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction

from hosting.core import audit, roles
from hosting.core.errors import Conflict, Forbidden, Invalid
from hosting.operations import dispatch, services as operations
from hosting.operations.models import Operation
from hosting.plans import seccomp

from .models import VirtualEnvironment as VE

Kind = Operation.Kind


def describe(ve):
    """What staff see of ``ve``'s relaxation: {"override", "plan", "effective"} as lists
    (``override`` None when it follows its plan)."""
    override = None if ve.seccomp_allow is None else seccomp.split(ve.seccomp_allow)
    return {"override": override, "plan": seccomp.split(ve.plan.seccomp_allow),
            "effective": seccomp.split(ve.engine_seccomp_allow())}


def override(ve, user, value, reboot=False):
    """Give ``ve`` the relaxation ``value`` (names; None = its plan's); return the
    queued "set" Operation.

    ``reboot``: a running VPS reboots to get it now. Raises Forbidden (not an
    administrator), Invalid (a name unknown or never relaxable) or Conflict
    (busy, terminated, being created); nothing changes then.
    """
    operations.check_actor(user, Kind.SET)  # first: a customer is told "only staff"
    if not roles.can(user, "seccomp.manage"):
        raise Forbidden(f"only administrators may change the seccomp filter "
                        f"({roles.refusal(user)})")
    try:
        value = None if value is None else seccomp.normalize(value)
    except ValidationError as exc:
        raise Invalid(" ".join(exc.messages), field="seccomp_allow") from None
    with transaction.atomic():
        ve = VE.objects.select_for_update().select_related("plan").get(pk=ve.pk)
        if ve.actual_state not in operations.ACTION_STATES[Kind.SET][0]:
            raise Conflict(f"cannot change the seccomp filter of VPS {ve.hostname} while it "
                           f"is {ve.get_actual_state_display().lower()}")
        previous = ve.seccomp_allow
        op = operations.create(ve, Kind.SET, user, {"seccomp_allow": value,
                                                    "reboot": bool(reboot)})
        ve.seccomp_allow = value
        ve.save(update_fields=["seccomp_allow"])
        audit.record(user, "ve.seccomp", ve, operation=str(op.pk), override=value,
                     previous=previous, effective=ve.engine_seccomp_allow(), reboot=bool(reboot))
        dispatch.on_commit(op)
    return op


class OverrideForm(forms.Form):
    """The staff VPS page's form (administrators)."""

    follow_plan = forms.BooleanField(required=False, label="Follow the plan",
                                     help_text="ignore the boxes below: the plan's setting")
    seccomp_allow = seccomp.FormField(label="Allow")
    reboot = forms.BooleanField(required=False, label="Reboot now",
                                help_text="else the change takes effect at the next reboot")

    def value(self):
        """The override to store: None to follow the plan, else the names."""
        data = self.cleaned_data
        return None if data["follow_plan"] else data["seccomp_allow"]
