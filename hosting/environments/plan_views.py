"""The Change plan page, for customers (/vps/<veid>/plan/); staff.py serves it to staff."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from hosting.core.errors import Invalid, ServiceError
from hosting.plans.models import Plan

from . import plan_change
from .models import VirtualEnvironment as VE


@login_required
@require_http_methods(["GET", "POST"])
def change_plan(request, veid):
    """A customer's (or staff's) Change plan page; done, it goes back to the VPS page."""
    return page(request, veid, "vps-detail")


def page(request, veid, done):
    """The page (GET) and the change (POST); ``done``: the URL name to go to after it
    ("vps-detail" or "staff-vps")."""
    # Scoped: another customer's VPS is a 404, as everywhere.
    ve = get_object_or_404(VE.objects.for_user(request.user)
                           .select_related("plan", "node", "template", "owner__user"), veid=veid)
    status, error = 200, ""
    if request.method == "POST":
        try:
            op = plan_change.change(ve, _plan(request.POST.get("plan")), request.user)
        except ServiceError as exc:
            status, error = exc.status, exc.message
        else:
            if op is None:
                messages.info(request, f"{ve.hostname} already has plan {ve.plan.name}.")
            else:
                messages.success(request, f"{ve.hostname} is moving to plan "
                                          f"{op.params['plan']}.")
            return redirect(done, **({"veid": veid} if done == "vps-detail" else {}))
    return render(request, "environments/plan.html", {
        "ve": ve, "options": plan_change.options(ve, request.user), "error": error,
        "policy": plan_change.policy(), "staff_page": done == "staff-vps",
        "busy": ve.operations.filter(state__in=("queued", "running")).first(),
    }, status=status)


def _plan(name):
    plan = Plan.objects.filter(name=name or "").first()
    if plan is None:
        raise Invalid("choose one of the plans listed", field="plan")
    return plan
