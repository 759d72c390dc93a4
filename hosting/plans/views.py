"""Staff pages: plans (create, edit, retire)."""

from django import forms
from django.contrib import messages
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from hosting.core import roles
from hosting.core.decorators import staff_required
from hosting.core.errors import ServiceError

from . import seccomp, services
from .fields import EDITABLE
from .models import Plan


class PlanForm(forms.ModelForm):
    seccomp_allow = seccomp.FormField(label="Seccomp relaxation")

    class Meta:
        model = Plan
        fields = EDITABLE
        widgets = {"templates": forms.CheckboxSelectMultiple}

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        if not roles.can(user, "seccomp.manage"):
            # shown, not editable: a disabled field keeps the plan's value whatever is posted
            self.fields["seccomp_allow"].disabled = True
            self.fields["seccomp_allow"].help_text += " (administrators only)"


@staff_required("plans.view")
def plan_list(request):
    plans = Plan.objects.prefetch_related("templates") \
        .annotate(environment_count=Count("environments"))  # one query, not one per plan
    return render(request, "staff/plans.html", {"plans": plans})


@staff_required("plans.view", write="plans.manage")
def plan_edit(request, pk=None):
    plan = get_object_or_404(Plan, pk=pk) if pk else Plan()
    before = plan.engine_settings() if pk else None
    form = PlanForm(request.POST or None, instance=plan, user=request.user)
    if request.method == "POST":
        if form.is_valid():
            plan = form.save(commit=False)
            try:
                queued = services.save(plan, request.user, before=before)
            except ServiceError as exc:  # a guard the form's own checks did not cover
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
                return render(request, "staff/plan_form.html", {"form": form, "plan": plan},
                              status=exc.status)
            form.save_m2m()
            note = f"; new limits queued for {len(queued)} VPS(es)" if queued else ""
            messages.success(request, f"Plan {plan.name} saved{note}.")
            return redirect("staff-plans")
        return render(request, "staff/plan_form.html", {"form": form, "plan": plan}, status=400)
    return render(request, "staff/plan_form.html", {"form": form, "plan": plan})


@staff_required("plans.manage")
@require_POST
def plan_retire(request, pk):
    plan = get_object_or_404(Plan, pk=pk)
    services.retire(plan, request.user)
    messages.success(request, f"Plan {plan.name} retired: it takes no new orders.")
    return redirect("staff-plans")
