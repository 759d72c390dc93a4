"""Staff pages: all VPSes with filters, the operation log and the audit log."""

from django.db.models import Q
from django.shortcuts import render

from hosting.core.decorators import staff_required
from hosting.core.paging import page_of
from hosting.core.models import AuditLog
from hosting.environments.models import VirtualEnvironment as VE
from hosting.nodes.models import Node
from hosting.plans.models import Plan
from hosting.usage import traffic
from hosting.usage.models import TrafficMonth

from .models import Operation
from .services import mark_passing_states

@staff_required("vps.view")
def environment_list(request):
    ves = VE.objects.select_related("owner__user", "plan", "node", "template") \
        .prefetch_related("addresses").order_by("veid")
    filters = {"actual_state": request.GET.get("state"), "node__name": request.GET.get("node"),
               "plan__name": request.GET.get("plan")}
    ves = ves.filter(**{k: v for k, v in filters.items() if v})
    if not request.GET.get("state"):
        ves = ves.live()
    if request.GET.get("crash_loop"):
        ves = ves.filter(crash_loop=True)
    if request.GET.get("q"):
        q = request.GET["q"]
        ves = ves.filter(Q(hostname__icontains=q) | Q(owner__user__username__icontains=q))
    page = page_of(request, ves)
    page.object_list = _with_month_bytes(mark_passing_states(page.object_list))
    return render(request, "staff/environments.html", {
        "page": page, "states": VE.State.choices,
        "nodes": Node.objects.values_list("name", flat=True),
        "plans": Plan.objects.values_list("name", flat=True), "query": request.GET})


def _with_month_bytes(ves):
    """Set ``ve.month_bytes`` (this month's traffic, None if none yet) on the VEs of a
    page, in one query for the page (a sum over every VE's join would group them all)."""
    rows = TrafficMonth.objects.filter(environment__in=ves, month=traffic.month_of()) \
        .values_list("environment_id", "rx_bytes", "tx_bytes")
    totals = {ve_id: rx + tx for ve_id, rx, tx in rows}
    for ve in ves:
        ve.month_bytes = totals.get(ve.pk)
    return ves


@staff_required("vps.view")
def operation_list(request):
    ops = Operation.objects.select_related("environment", "requested_by")
    if request.GET.get("state"):
        ops = ops.filter(state=request.GET["state"])
    return render(request, "staff/operations.html", {
        "page": page_of(request, ops), "states": Operation.State.choices, "query": request.GET})


@staff_required("audit.view")
def audit_list(request):
    rows = AuditLog.objects.select_related("actor")
    if request.GET.get("action"):
        rows = rows.filter(action__startswith=request.GET["action"])
    return render(request, "staff/audit.html",
                  {"page": page_of(request, rows), "query": request.GET})
