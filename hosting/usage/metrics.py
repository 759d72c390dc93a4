"""/metrics: the latest sample of every node and VE as Prometheus gauges and counters.

For providers who already run Prometheus and Grafana. Staff only: scrape it
with a staff user's API token (``authorization: {type: Token, credentials:
...}`` in the scrape config). Values come from each node's latest sample
round, so a scrape costs two queries whatever the interval.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Max
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
    lines = []
    # A node silent for two sampling intervals exports nothing rather than stale values.
    fresh = timezone.now() - timedelta(seconds=2 * settings.NODE_SAMPLE_SECONDS)
    latest = dict(NodeSample.objects.filter(time__gte=fresh).values("node_id")
                  .annotate(last=Max("time")).values_list("node_id", "last"))
    nodes = {n.pk: n for n in Node.objects.all()}
    node_rows = [(nodes[node_id], NodeSample.objects.filter(node_id=node_id, time=last).first())
                 for node_id, last in latest.items()]
    for name, text, kind, field, scale in NODE_METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{_labels(node=node.name)} {_number(getattr(s, field), scale)}"
                  for node, s in node_rows]
    lines += ["# HELP hosting_node_ram_sold_bytes RAM sold to the node's live VEs (plans)",
              "# TYPE hosting_node_ram_sold_bytes gauge"]
    lines += [f"hosting_node_ram_sold_bytes{_labels(node=n.name)} {placement.sold(n).ram}"
              for n in nodes.values()]
    samples = UsageSample.objects.select_related("environment__plan", "environment__node")
    ve_rows = []
    for node_id, last in latest.items():
        ve_rows += list(samples.filter(environment__node_id=node_id, time=last))
    for name, text, kind, field, scale in VE_METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for s in ve_rows:
            value = getattr(s, field)
            if value is not None:
                ve = s.environment
                labels = _labels(veid=ve.veid, hostname=ve.hostname, node=ve.node.name,
                                 plan=ve.plan.name)
                lines.append(f"{name}{labels} {_number(value, scale)}")
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
