"""Customer portal: my VPSes, ordering, one VPS with its actions and history."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from hosting.consoles import page as console_page, tickets
from hosting.core import roles
from hosting.core.errors import Forbidden, Invalid, ServiceError
from hosting.operations import live as push, services as operations
from hosting.operations.models import Operation
from hosting.operations.services import mark_passing_states
from hosting.usage import connections, graphs, traffic

from . import backup_card, seccomp, services, snapshots, staff
from .forms import (OrderForm, PasswordForm, ReinstallForm, RollbackForm, SnapshotForm,
                    TerminateForm)
from .models import VirtualEnvironment as VE
from .refusals import refusal

SIMPLE_ACTIONS = {"start": Operation.Kind.START, "stop": Operation.Kind.STOP,
                  "reboot": Operation.Kind.RESTART, "terminate": Operation.Kind.DESTROY,
                  "suspend": Operation.Kind.SUSPEND, "resume": Operation.Kind.RESUME,
                  "hibernate": Operation.Kind.HIBERNATE}
STAFF_ACTIONS = ("suspend", "resume")
BUTTON_ORDER = ("start", "stop", "reboot", "hibernate", "suspend", "resume", "terminate")
# Kept out of Django's error reports (the passwords are never stored or logged).
SECRET_FIELDS = ("root_password", "current_password")


@login_required
def home(request):
    if request.user.is_staff:
        return redirect("staff-home")
    ves = mark_passing_states(VE.objects.for_user(request.user).live()
                              .select_related("plan", "template").prefetch_related("addresses"))
    customer = getattr(request.user, "customer", None)
    return render(request, "environments/list.html", {"environments": ves, "customer": customer})


@sensitive_post_parameters(*SECRET_FIELDS)
@login_required
def order(request):
    form = OrderForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                op = services.order(_customer(request), data["plan"], data["template"],
                                    data["hostname"], request.user, data["root_password"],
                                    data["ssh_key"])
            except ServiceError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
                status = exc.status
            else:
                messages.success(request, f"Your VPS {op.environment.hostname} is being created.")
                return redirect("vps-detail", veid=op.environment.veid)
        else:
            status = 400
    return render(request, "environments/order.html", {"form": form}, status=status)


def buttons(ve, current, viewer):
    """[(action name, label, why not or "")] of the lifecycle buttons ``viewer`` gets on
    ``ve``: an action is offered only from the states the service accepts it in, and
    none while another operation runs (the service would answer 409)."""
    out = []
    for name in BUTTON_ORDER:
        kind = SIMPLE_ACTIONS[name]
        if name in STAFF_ACTIONS and not viewer.is_staff:
            continue
        if kind == Operation.Kind.HIBERNATE and not (viewer.is_staff or ve.plan.hibernation):
            continue  # the provider sells it with some plans only
        if viewer.is_staff and not roles.can(viewer, roles.KIND_CAPABILITY.get(
                kind, roles.DEFAULT_KIND_CAPABILITY)):
            continue  # the role may not do it (an auditor sees no buttons)
        out.append((name, Operation.Kind(kind).label, refusal(ve, current, kind)))
    return out


def _live_context(ve, viewer):
    month = traffic.current(ve)
    operations = list(ve.operations.select_related("requested_by")[:20])
    for op in operations:
        op.requester = op.requester_shown_to(viewer)
        op.error_text = op.error_shown_to(viewer)
    current = ve.operations.filter(state__in=Operation.UNFINISHED).first()
    return {"ve": ve, "operations": operations, "current": current,
            "buttons": buttons(ve, current, viewer) if ve.actual_state != "destroyed" else [],
            "traffic": month, "quota": traffic.quota_bytes(ve, month),
            "connections": connections.current(ve)}


# (chart id, title) on the VPS page; static/js/usage.js draws them from the usage API.
USAGE_CHARTS = [("cpu", "CPU (CPUs busy)"), ("ram", "RAM"), ("disk", "Disk"),
                ("net", "Network"), ("packets", "Packets"), ("processes", "Processes"),
                ("connections", "Connections")]


@login_required
def detail(request, veid, status=200, password_form=None, reinstall_form=None):
    ve = _own(request, veid)
    live = _live_context(ve, request.user)
    console = console_page.context(request, ve)
    return console_page.allow(render(request, "environments/detail.html", {
        **live,
        **console,
        "live_socket": tickets.socket_base(request) + push.SOCKET_PATH.format(veid=ve.veid),
        "password_refusal": refusal(ve, live["current"], Operation.Kind.PASSWORD),
        "reinstall_refusal": refusal(ve, live["current"], Operation.Kind.REINSTALL),
        "password_form": password_form or PasswordForm(),
        "reinstall_form": reinstall_form or ReinstallForm(initial={"template": ve.template}),
        "terminate_form": TerminateForm(),
        "usage_ranges": list(graphs.RANGES),
        "usage_charts": USAGE_CHARTS,
        # staff see the forms their role may use (customers: their own VPS, all of them)
        "may_operate": not request.user.is_staff or roles.can(request.user, "vps.operate"),
        "may_change_plan": not request.user.is_staff or roles.can(request.user, "vps.plan"),
        **_seccomp_context(ve, request.user),
        **_snapshot_context(ve, live["current"], request.user),
        **backup_card.context(ve, live["current"], request.user),
        **staff.move_context(ve, request.user),
    }, status=status), request, console)


def _seccomp_context(ve, viewer):
    """The seccomp card: staff see it, administrators get its form; customers nothing."""
    if not viewer.is_staff:
        return {}
    state = seccomp.describe(ve)
    form = None
    if roles.can(viewer, "seccomp.manage"):
        form = seccomp.OverrideForm(initial={"follow_plan": state["override"] is None,
                                             "seccomp_allow": state["effective"]})
    return {"seccomp": state, "seccomp_form": form}


def _snapshot_context(ve, current, viewer):
    """The snapshots card: where the plan sells snapshots (or for staff), its list,
    allowance and what may be done now."""
    if not (viewer.is_staff or ve.plan.snapshots) or ve.actual_state == "destroyed":
        return {}
    return {"snapshots": list(ve.snapshots.all()), "snapshot_limits": snapshots.limits(ve),
            "snapshot_form": SnapshotForm(), "rollback_form": RollbackForm(),
            "snapshot_refusal": refusal(ve, current, Operation.Kind.SNAPSHOT),
            "rollback_refusal": refusal(ve, current, Operation.Kind.ROLLBACK),
            "snapshot_delete_refusal": refusal(ve, current, Operation.Kind.SNAPSHOT_DELETE)}


@sensitive_post_parameters(*SECRET_FIELDS)
@login_required
@require_POST
def snapshot_action(request, veid, what):
    """Take (``what`` "take"), roll back to or delete a snapshot."""
    ve = _own(request, veid)
    if what not in ("take", "rollback", "delete"):
        return detail(request, veid, status=404)
    form = (SnapshotForm if what == "take" else RollbackForm)(request.POST)
    try:
        if what == "take":
            if not form.is_valid():
                raise Invalid("a snapshot name has at most 40 characters")
            snapshots.take(ve, request.user, form.cleaned_data["name"])
            messages.success(request, "The snapshot is being taken.")
        elif what == "rollback":
            if not form.is_valid():
                raise Forbidden("your current password is needed to roll back")
            services.reauthenticate(request.user, form.cleaned_data["current_password"],
                                    form.cleaned_data["otp_code"])
            snapshots.rollback(ve, request.user, form.cleaned_data["name"])
            messages.success(request, f"{ve.hostname} is being rolled back to "
                                      f"{form.cleaned_data['name']}.")
        else:
            snapshots.delete(ve, request.user, request.POST.get("name", ""))
            messages.success(request, "The snapshot is being deleted.")
    except ServiceError as exc:
        messages.error(request, exc.message)
        return detail(request, veid, status=exc.status)
    return redirect("vps-detail", veid=veid)


@login_required
def operations_fragment(request, veid):
    """The live part of the VPS page (state, progress, history), polled by the browser."""
    return render(request, "environments/_live.html",
                  _live_context(_own(request, veid), request.user))


@login_required
@require_POST
def action(request, veid, name):
    ve = _own(request, veid)
    kind = SIMPLE_ACTIONS.get(name)
    if kind is None:
        return detail(request, veid, status=404)
    try:
        if kind == Operation.Kind.DESTROY:  # like reinstall: the password (and code) again
            form = TerminateForm(request.POST)
            if not form.is_valid():
                raise Forbidden("your current password is needed to terminate the VPS")
            services.reauthenticate(request.user, form.cleaned_data["current_password"],
                                    form.cleaned_data["otp_code"])
        operations.request(ve, kind, request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return detail(request, veid, status=exc.status)
    if kind == Operation.Kind.DESTROY:
        messages.success(request, f"{ve.hostname} is being terminated.")
    return redirect("vps-detail", veid=veid)


@sensitive_post_parameters(*SECRET_FIELDS)
@login_required
@require_POST
def reset_password(request, veid):
    ve = _own(request, veid)
    form = PasswordForm(request.POST)
    if not form.is_valid():
        return detail(request, veid, status=400, password_form=form)
    try:
        services.reauthenticate(request.user, form.cleaned_data["current_password"],
                                form.cleaned_data["otp_code"])
        services.reset_password(ve, request.user, form.cleaned_data["root_password"])
    except ServiceError as exc:
        form.add_error(None, exc.message)
        return detail(request, veid, status=exc.status, password_form=form)
    messages.success(request, "The new root password is being set.")
    return redirect("vps-detail", veid=veid)


@sensitive_post_parameters(*SECRET_FIELDS)
@login_required
@require_POST
def reinstall(request, veid):
    ve = _own(request, veid)
    form = ReinstallForm(request.POST)
    if not form.is_valid():
        return detail(request, veid, status=400, reinstall_form=form)
    data = form.cleaned_data
    try:
        services.reauthenticate(request.user, data["current_password"], data["otp_code"])
        services.reinstall(ve, request.user, data["template"], data["root_password"],
                           data["ssh_key"], data["keep_old"])
    except ServiceError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return detail(request, veid, status=exc.status, reinstall_form=form)
    messages.success(request, f"{ve.hostname} is being reinstalled.")
    return redirect("vps-detail", veid=veid)


def _own(request, veid):
    """The VE if the user may see it; 404 otherwise (never reveal others' VEs)."""
    return get_object_or_404(VE.objects.for_user(request.user)
                             .select_related("plan", "node", "template"), veid=veid)


def _customer(request):
    customer = getattr(request.user, "customer", None)
    if customer is None:
        raise Forbidden("only customers order VPSes here; staff use the API or the admin")
    return customer
