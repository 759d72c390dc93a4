"""API: nodes (staff). Facts come from the node's heartbeat; staff set ratios and draining."""

from django.db.models import Count, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from hosting.core import audit
from hosting.core.api import StaffCan
from hosting.core.errors import Invalid
from hosting.usage import graphs

from . import evacuation
from .models import Node


class NodeSerializer(serializers.ModelSerializer):
    queue = serializers.CharField(read_only=True)
    environments = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = ["id", "name", "queue", "state", "last_heartbeat", "ram_bytes", "cpus",
                  "disk_bytes", "disk_free_bytes", "cgroup_version", "warnings", "drift",
                  "ram_overcommit", "swap_overcommit", "cpu_overcommit", "disk_overcommit",
                  "risk_pct", "migrate_address", "templates", "evacuation",
                  "backup_window_start", "backup_window_hours", "backup_parallel",
                  "backup_limit_kib", "backup_checked", "backup_check_error",
                  "environments"]
        read_only_fields = ["last_heartbeat", "ram_bytes", "cpus", "disk_bytes",
                            "disk_free_bytes", "cgroup_version", "warnings", "drift",
                            "migrate_address", "templates", "evacuation", "backup_checked",
                            "backup_check_error"]

    def get_environments(self, node) -> int:
        """How many live VPSes the node holds."""
        counted = getattr(node, "live_environments", None)  # NodeViewSet counts in its query
        return node.environments.live().count() if counted is None else counted


class EvacuateSerializer(serializers.Serializer):
    parallel = serializers.IntegerField(min_value=1, max_value=evacuation.MAX_PARALLEL,
                                        default=2, help_text="moves at once")


class NodeViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, mixins.DestroyModelMixin,
                  viewsets.ReadOnlyModelViewSet):
    """Nodes. Set state 'draining' to stop placing new VEs on one; DELETE removes one
    with no live VE and no running worker (409 saying why not)."""

    queryset = Node.objects.annotate(live_environments=Count(
        "environments", filter=~Q(environments__actual_state="destroyed"))).order_by("name")
    serializer_class = NodeSerializer
    permission_classes = [StaffCan.needing("nodes.view", "nodes.manage")]
    filterset_fields = ["state"]

    @extend_schema(parameters=[OpenApiParameter("range", str, enum=list(graphs.RANGES),
                                                default="24h")],
                   responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def usage(self, request, pk=None):
        """RAM and CPU of the node's VEs over a range (the biggest on their own), and
        the node's physical capacity: for its stacked graphs."""
        node = self.get_object()
        name = request.query_params.get("range", "24h")
        if name not in graphs.RANGES:
            raise Invalid(f"range must be one of {', '.join(graphs.RANGES)}", field="range")
        return Response(graphs.node_usage(node, name))

    @extend_schema(request=EvacuateSerializer, responses={202: NodeSerializer})
    @action(detail=True, methods=["post"])
    def evacuate(self, request, pk=None):
        """Move every VPS off the node (live where it can), ``parallel`` at a time; the
        node turns draining. Follow it in ``evacuation`` and the VPSes' operations.
        Administrators only; 409 if it is being evacuated already."""
        body = EvacuateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        node = evacuation.start(self.get_object(), request.user, body.validated_data["parallel"])
        return Response(NodeSerializer(node).data, status=202)

    @extend_schema(request=None, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"], url_path="stop-evacuation")
    def stop_evacuation(self, request, pk=None):
        """Queue no more moves off the node (those under way finish); it stays draining."""
        return Response(NodeSerializer(evacuation.stop(self.get_object(), request.user)).data)

    def perform_create(self, serializer):
        audit.record(self.request.user, "node.create", serializer.save())

    def perform_update(self, serializer):
        from hosting.core.errors import Conflict

        from .removal import rename_refusal
        name = serializer.validated_data.get("name", serializer.instance.name)
        why = rename_refusal(serializer.instance, name)
        if why:
            raise Conflict(why, field="name")
        audit.record(self.request.user, "node.update", serializer.save(),
                     changes={k: str(v) for k, v in serializer.validated_data.items()})

    def perform_destroy(self, node):
        from .removal import remove
        remove(node, self.request.user)
