"""Staff pages: nodes with what they sold against what they may sell."""

from django.shortcuts import get_object_or_404, render

from hosting.core.decorators import staff_required

from hosting.usage import graphs

from . import placement
from .models import Node

GIB = 1 << 30


def _usage(node):
    have, sold = placement.capacity(node), placement.sold(node)
    rows = []
    for name, unit, scale in (("ram", "GiB", GIB), ("swap", "GiB", GIB), ("cpu", "CPUs", 1),
                              ("disk", "GiB", GIB)):
        cap, used = getattr(have, name), getattr(sold, name)
        rows.append({"name": name, "unit": unit, "sold": float(used) / scale,
                     "capacity": float(cap) / scale,
                     "percent": round(100 * float(used) / float(cap)) if cap else None})
    return rows


@staff_required
def node_list(request):
    nodes = [(node, _usage(node), node.environments.live().count()) for node in Node.objects.all()]
    return render(request, "staff/nodes.html", {"nodes": nodes})


@staff_required
def node_detail(request, pk):
    node = get_object_or_404(Node, pk=pk)
    ves = node.environments.live().select_related("owner__user", "plan")
    room = placement.Fleet([node]).rooms[0]  # what placement sees: expected use, risk level
    return render(request, "staff/node.html", {"node": node, "usage": _usage(node),
                                               "environments": ves, "room": room,
                                               "disk_allocated": room.sold.disk,
                                               "usage_ranges": list(graphs.RANGES)})
