"""Staff pages: nodes with what they sold against what they may sell."""

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from hosting.core import audit, roles
from hosting.core.decorators import staff_required
from hosting.core.errors import ServiceError

from hosting.usage import graphs

from . import evacuation, placement, removal
from .models import Node

GIB = 1 << 30
# A node holds a thousand VPSes: its page lists the first ones and links to the staff
# VPS list filtered to the node (paginated) for the rest.
LISTED_VES = 50


def _usage(room):
    """Sold against sellable per resource, from what placement sees of the node."""
    rows = []
    for name, unit, scale in (("ram", "GiB", GIB), ("swap", "GiB", GIB), ("cpu", "CPUs", 1),
                              ("disk", "GiB", GIB)):
        cap, used = getattr(room.capacity, name), getattr(room.sold, name)
        rows.append({"name": name, "unit": unit, "sold": float(used) / scale,
                     "capacity": float(cap) / scale,
                     "percent": round(100 * float(used) / float(cap)) if cap else None})
    return rows


@staff_required("nodes.view")
def node_list(request):
    rooms = placement.Fleet(list(Node.objects.all())).rooms
    nodes = [(room.node, _usage(room), room.ve_count) for room in rooms]
    return render(request, "staff/nodes.html", {"nodes": nodes})


@staff_required("nodes.view")
def node_detail(request, pk):
    node = get_object_or_404(Node, pk=pk)
    ves = node.environments.live().select_related("owner__user", "plan").order_by("veid")
    room = placement.Fleet([node]).rooms[0]  # what placement sees: expected use, risk level
    return render(request, "staff/node.html", {"node": node, "usage": _usage(room),
                                               "environments": list(ves[:LISTED_VES]),
                                               "environment_count": ves.count(),
                                               "room": room,
                                               "disk_allocated": room.sold.disk,
                                               "removal_refusal": removal.refusal(node),
                                               "usage_ranges": list(graphs.RANGES),
                                               "evacuation": evacuation.progress(node),
                                               **_backups(node),
                                               "may_manage": roles.can(request.user,
                                                                       "nodes.manage")})


class BackupWindowForm(forms.ModelForm):
    class Meta:
        model = Node
        fields = ["backup_window_start", "backup_window_hours", "backup_parallel",
                  "backup_limit_kib"]


def _backups(node):
    """The node's backup card: its repository check and the backups that failed lately."""
    from hosting.operations.models import Operation
    since = timezone.now() - timedelta(days=2)
    failed = Operation.objects.filter(environment__node=node, kind=Operation.Kind.BACKUP,
                                      state=Operation.State.FAILED, created__gte=since) \
        .select_related("environment")[:50]
    return {"failed_backups": list(failed), "backup_form": BackupWindowForm(instance=node)}


@staff_required("nodes.manage")
@require_POST
def node_backups(request, pk):
    """Set the node's backup window, parallelism and bandwidth from its page."""
    node = get_object_or_404(Node, pk=pk)
    form = BackupWindowForm(request.POST, instance=node)
    if form.is_valid():
        form.save()
        audit.record(request.user, "node.backups", node,
                     **{k: str(v) for k, v in form.cleaned_data.items()})
        messages.success(request, f"Backup settings of {node.name} saved.")
    else:
        messages.error(request, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
    return redirect("staff-node", pk=pk)


@staff_required("nodes.manage")
@require_POST
def node_evacuate(request, pk):
    """Start (or, with ``stop``, stop) evacuating a node from its page."""
    node = get_object_or_404(Node, pk=pk)
    try:
        if request.POST.get("stop"):
            evacuation.stop(node, request.user)
            messages.success(request, f"No more VPSes are moved off {node.name}; moves under "
                                      "way finish.")
        else:
            evacuation.start(node, request.user, request.POST.get("parallel") or 2)
            messages.success(request, f"Evacuating {node.name}: it takes no new VPSes and its "
                                      "VPSes move to other nodes.")
    except (ServiceError, ValueError) as exc:
        messages.error(request, getattr(exc, "message", "parallel must be a number"))
    return redirect("staff-node", pk=pk)


@staff_required("nodes.manage")
@require_POST
def node_remove(request, pk):
    """Remove an empty, silent node (hosting/nodes/removal.py); 409 on its page if not."""
    node = get_object_or_404(Node, pk=pk)
    try:
        removal.remove(node, request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
        response = node_detail(request, pk)
        response.status_code = exc.status
        return response
    messages.success(request, f"Node {node.name} removed.")
    return redirect("staff-nodes")
