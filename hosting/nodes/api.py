"""API: nodes (staff). Facts come from the node's heartbeat; staff set ratios and draining."""

from rest_framework import mixins, serializers, viewsets

from hosting.core import audit
from hosting.core.api import IsStaff

from .models import Node


class NodeSerializer(serializers.ModelSerializer):
    queue = serializers.CharField(read_only=True)
    environments = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = ["id", "name", "queue", "state", "last_heartbeat", "ram_bytes", "cpus",
                  "disk_bytes", "cgroup_version", "warnings", "drift", "ram_overcommit",
                  "swap_overcommit", "cpu_overcommit", "disk_overcommit", "environments"]
        read_only_fields = ["last_heartbeat", "ram_bytes", "cpus", "disk_bytes",
                            "cgroup_version", "warnings", "drift"]

    def get_environments(self, node) -> int:
        return node.environments.live().count()


class NodeViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Nodes. Set state 'draining' to stop placing new VEs on one."""

    queryset = Node.objects.all()
    serializer_class = NodeSerializer
    permission_classes = [IsStaff]
    filterset_fields = ["state"]

    def perform_create(self, serializer):
        audit.record(self.request.user, "node.create", serializer.save())

    def perform_update(self, serializer):
        audit.record(self.request.user, "node.update", serializer.save(),
                     changes={k: str(v) for k, v in serializer.validated_data.items()})
