"""Staff pages: the OS templates on offer (add, retire, offer again); a VPS's plan change,
seccomp override and move to another node."""

from django import forms
from django.contrib import messages
from django.db import transaction
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from hosting.core import audit, roles
from hosting.core.decorators import staff_required
from hosting.core.errors import ServiceError
from hosting.nodes import moves

from .models import OSTemplate, VirtualEnvironment as VE
from . import plan_views, seccomp


class TemplateForm(forms.ModelForm):
    class Meta:
        model = OSTemplate
        fields = ["name", "title", "share_files"]
        help_texts = {"name": "as the nodes know it: `vectl template build NAME` or "
                              "`vectl template import NAME FILE` on each node"}


@staff_required("templates.view", write="templates.manage")
def template_list(request):
    form = TemplateForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            with transaction.atomic():
                template = form.save()
                audit.record(request.user, "template.add", template, title=template.title)
            messages.success(request, f"Template {template.name} is offered.")
            return redirect("staff-templates")
        status = 400
    else:
        status = 200
    counts = dict(VE.objects.live().values_list("template").annotate(n=Count("pk")))
    templates = [(t, counts.get(t.pk, 0)) for t in OSTemplate.objects.all()]
    return render(request, "staff/templates.html", {"templates": templates, "form": form},
                  status=status)


@staff_required("templates.manage")
@require_POST
def template_active(request, pk, active):
    """Retire a template (existing VPSes keep it; no new orders or reinstalls) or offer it again."""
    template = _set_template_flag(request, pk, "active", active,
                                  "template.offer" if active else "template.retire")
    state = "offered again" if active else "retired: existing VPSes keep it"
    messages.success(request, f"Template {template.name} {state}.")
    return redirect("staff-templates")


@staff_required("templates.manage")
@require_POST
def template_sharing(request, pk, share):
    """Make new VPSes of a template share its files on their node, or get a copy each
    (existing VPSes stay as they were made)."""
    template = _set_template_flag(request, pk, "share_files", share,
                                  "template.share" if share else "template.copy")
    how = "share its files on their node" if share else "get their own copy of its files"
    messages.success(request, f"New VPSes of {template.name} {how}; existing ones stay "
                              "as they are.")
    return redirect("staff-templates")


def _set_template_flag(request, pk, field, value, action):
    """Set template ``pk``'s boolean ``field`` and audit it as ``action``; the template."""
    template = get_object_or_404(OSTemplate, pk=pk)
    with transaction.atomic():
        setattr(template, field, value)
        template.save(update_fields=[field])
        audit.record(request.user, action, template)
    return template


@staff_required("vps.view", write="vps.plan")
@require_http_methods(["GET", "POST"])
def staff_change_plan(request, veid):
    """A VPS's Change plan page among the staff pages (any change the rules allow);
    done, it goes back to the VPS list."""
    return plan_views.page(request, veid, "staff-vps")


@staff_required("seccomp.manage")
@require_POST
def staff_seccomp(request, veid):
    """Set a VPS's seccomp override from its page (administrators); back to the page."""
    ve = get_object_or_404(VE.objects.select_related("plan"), veid=veid)
    form = seccomp.OverrideForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(e for field in form.errors.values() for e in field)
        messages.error(request, f"Seccomp filter not changed: {errors}")
        return redirect("vps-detail", veid=veid)
    try:
        seccomp.override(ve, request.user, form.value(), form.cleaned_data["reboot"])
    except ServiceError as exc:
        messages.error(request, f"Seccomp filter not changed: {exc.message}")
        return redirect("vps-detail", veid=veid)
    when = ("the VPS reboots now to get it" if form.cleaned_data["reboot"]
            else "it takes effect at the VPS's next reboot")
    messages.success(request, f"Seccomp filter change queued: {when}.")
    return redirect("vps-detail", veid=veid)


class MoveForm(forms.Form):
    """The Migrate card of a VPS's page: a node that can take it, or the best one."""

    node = forms.ChoiceField(label="Move to", required=False)
    offline = forms.BooleanField(label="Offline (stop, copy, start)", required=False)

    def __init__(self, *args, able=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["node"].choices = [("", "the best node (placement rule)")] + [
            (node.name, node.name) for node in able]


def move_context(ve, viewer):
    """The Migrate card: administrators get it on a VPS that is not gone."""
    if ve.actual_state in (VE.State.DESTROYED, VE.State.CREATING) or \
            not roles.can(viewer, "nodes.manage"):
        return {}
    nodes = moves.candidates(ve)
    able = [node for node, why in nodes.items() if not why]
    return {"move_form": MoveForm(able=able),
            "move_refusals": [why for why in nodes.values() if why]}


@staff_required("nodes.manage")
@require_POST
def staff_migrate(request, veid):
    """Move a VPS to another node from its page (administrators); back to the page."""
    ve = get_object_or_404(VE.objects.select_related("node", "plan", "template"), veid=veid)
    form = MoveForm(request.POST, able=[node for node, why in moves.candidates(ve).items()
                                        if not why])
    if not form.is_valid():
        messages.error(request, "Not moved: choose a node from the list.")
        return redirect("vps-detail", veid=veid)
    try:
        moves.request(ve, request.user, form.cleaned_data["node"] or None,
                      form.cleaned_data["offline"])
    except ServiceError as exc:
        messages.error(request, f"Not moved: {exc.message}")
        return redirect("vps-detail", veid=veid)
    messages.success(request, f"Moving {ve.hostname}: follow it under Operations.")
    return redirect("vps-detail", veid=veid)
