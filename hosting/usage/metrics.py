"""/metrics: the latest sample of every node and VE as Prometheus gauges and counters.

For providers who already run Prometheus and Grafana. Staff only: scrape it
with a staff user's API token (``authorization: {type: Token, credentials:
...}`` in the scrape config). Values come from each node's latest sample
round; a scrape costs the same few queries of bare columns however many nodes
and VEs there are (tests/hosting/test_usage_scale.py counts them).
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone
from rest_framework import renderers
from rest_framework.response import Response
from rest_framework.views import APIView

from hosting.core.api import StaffCan
from hosting.nodes import placement
from hosting.nodes.models import Node

from .models import NodeSample, UsageSample

# (metric, help, type, sample field, scale)
VE_METRICS = (
    ("hosting_ve_cpu_seconds_total", "CPU time used since the VE started", "counter",
     "cpu_ns", 1e-9),
    ("hosting_ve_ram_bytes", "RAM in use apart from reclaimable file cache (working set)",
     "gauge", "ram", 1),
    ("hosting_ve_ram_cache_bytes", "inactive file cache, reclaimable", "gauge", "ram_cache", 1),
    ("hosting_ve_swap_bytes", "swap in use", "gauge", "swap", 1),
    ("hosting_ve_processes", "processes and threads", "gauge", "processes", 1),
    ("hosting_ve_disk_used_bytes", "disk space used", "gauge", "disk", 1),
    ("hosting_ve_disk_used_inodes", "inodes used", "gauge", "inodes", 1),
    ("hosting_ve_network_receive_bytes_total", "bytes the VE received", "counter",
     "rx_bytes", 1),
    ("hosting_ve_network_transmit_bytes_total", "bytes the VE sent", "counter", "tx_bytes", 1),
    ("hosting_ve_network_receive_packets_total", "packets the VE received", "counter",
     "rx_packets", 1),
    ("hosting_ve_network_transmit_packets_total", "packets the VE sent", "counter",
     "tx_packets", 1),
    ("hosting_ve_disk_read_bytes_total", "block I/O read since the VE started", "counter",
     "io_read_bytes", 1),
    ("hosting_ve_disk_written_bytes_total", "block I/O written since the VE started",
     "counter", "io_write_bytes", 1),
    ("hosting_ve_memory_limit_hits_total", "times the RAM limit was hit (failcnt)", "counter",
     "memory_failcnt", 1),
    ("hosting_ve_oom_kills_total", "processes killed for memory", "counter", "oom_kills", 1),
)
NODE_METRICS = (
    ("hosting_node_cpu_busy_seconds_total", "CPU time the node was busy", "counter",
     "cpu_busy_ns", 1e-9),
    ("hosting_node_cpus", "CPUs", "gauge", "cpus", 1),
    ("hosting_node_ram_used_bytes", "RAM in use", "gauge", "ram_used", 1),
    ("hosting_node_ram_bytes", "physical RAM", "gauge", "ram_total", 1),
    ("hosting_node_swap_used_bytes", "swap in use", "gauge", "swap_used", 1),
    ("hosting_node_disk_used_bytes", "disk used where VEs live", "gauge", "disk_used", 1),
    ("hosting_node_disk_bytes", "disk where VEs live", "gauge", "disk_total", 1),
    ("hosting_node_load1", "1-minute load average", "gauge", "load1", 1),
)


class PrometheusRenderer(renderers.BaseRenderer):
    media_type = "text/plain"
    format = "prometheus"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, str) else str(data.get("detail", data))


def exposition():
    """The text exposition format (version 0.0.4) of the latest samples."""
    from hosting.environments.models import VirtualEnvironment as VE
    lines = []
    # A node silent for two sampling intervals exports nothing rather than stale values.
    fresh = timezone.now() - timedelta(seconds=2 * settings.NODE_SAMPLE_SECONDS)
    names = dict(Node.objects.order_by("name").values_list("pk", "name"))
    node_fields = [field for _, _, _, field, _ in NODE_METRICS]
    latest = {}  # {node pk: (time, values)} of each node's latest round
    for node_id, moment, *values in NodeSample.objects.filter(time__gte=fresh).order_by(
            "node_id", "time", "-id").values_list("node_id", "time", *node_fields):
        latest[node_id] = (moment, values)  # ends as the latest time's first row
    nodes = [node_id for node_id in names if node_id in latest]
    for index, (name, text, kind, _, scale) in enumerate(NODE_METRICS):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{_labels(node=names[node_id])} "
                  f"{_number(latest[node_id][1][index], scale)}" for node_id in nodes]
    # What placement.sold() sums for RAM, for every node in one query.
    sold = dict(VE.objects.filter(placement.LIVE).values("node_id")
                .annotate(ram=Sum("plan__ram_mb")).values_list("node_id", "ram"))
    lines += ["# HELP hosting_node_ram_sold_bytes RAM sold to the node's live VEs (plans)",
              "# TYPE hosting_node_ram_sold_bytes gauge"]
    lines += [f"hosting_node_ram_sold_bytes{_labels(node=name)} "
              f"{(sold.get(node_id) or 0) * placement.MIB}" for node_id, name in names.items()]
    # Each VE's sample of its node's latest round: rows of those times, kept where the
    # time is its (current) node's.
    ve_fields = [field for _, _, _, field, _ in VE_METRICS]
    rows = UsageSample.objects.filter(
        time__in={moment for moment, _ in latest.values()},
        environment__node_id__in=list(latest)).order_by(
        "environment__node__name", "environment__veid").values_list(
        "time", "environment__node_id", "environment__veid", "environment__hostname",
        "environment__plan__name", *ve_fields)
    ve_rows = [(_labels(veid=veid, hostname=hostname, node=names[node_id], plan=plan), values)
               for moment, node_id, veid, hostname, plan, *values in rows
               if latest[node_id][0] == moment]
    for index, (name, text, kind, _, scale) in enumerate(VE_METRICS):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels} {_number(values[index], scale)}"
                  for labels, values in ve_rows if values[index] is not None]
    return "\n".join(lines) + "\n"


def _labels(**labels):
    def escape(value):
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value, scale):
    return repr(value * scale) if scale != 1 else str(value)


class MetricsView(APIView):
    """Prometheus metrics of every node and VE (staff: token or session)."""

    permission_classes = [StaffCan.needing("reports.view")]
    renderer_classes = [PrometheusRenderer]
    schema = None  # not part of the REST API's OpenAPI document

    def get(self, request):
        return Response(exposition(), content_type="text/plain; version=0.0.4; charset=utf-8")
