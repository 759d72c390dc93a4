"""API: rebalancing (staff). The plan is read by reports' viewers; applying it, or
cancelling a run, takes nodes.manage (docs/dashboard.md, "Moving VPSes between nodes")."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from hosting.core.api import StaffCan

from . import rebalance
from .evacuation import MAX_PARALLEL
from .models import Rebalance


class RebalanceSerializer(serializers.ModelSerializer):
    state = serializers.CharField(read_only=True)
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    run_at = serializers.DateTimeField(required=False, allow_null=True,
                                       help_text="when the moves begin; absent or past: now")
    parallel = serializers.IntegerField(min_value=1, max_value=MAX_PARALLEL, default=2)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Rebalance
        fields = ["id", "state", "requested_by", "created", "run_at", "parallel", "moves",
                  "stuck", "started", "finished", "progress"]
        read_only_fields = ["created", "moves", "stuck", "started", "finished"]

    def get_progress(self, batch) -> list:
        """Each move with the state of its operation (waiting, queued, running,
        succeeded, failed, stuck)."""
        return rebalance.progress(batch)


class RebalanceViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Rebalances: ``GET plan/`` for the recommended moves; POST applies them now or at
    ``run_at`` (409 if nothing needs to move now)."""

    queryset = Rebalance.objects.select_related("requested_by")
    serializer_class = RebalanceSerializer
    permission_classes = [StaffCan.needing("reports.view", "nodes.manage")]

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["get"])
    def plan(self, request):
        """The moves that bring every online node back under its risk level now."""
        return Response(rebalance.plan())

    def create(self, request, *args, **kwargs):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        batch = rebalance.apply(request.user, body.validated_data.get("run_at"),
                                body.validated_data["parallel"])
        return Response(self.get_serializer(batch).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: RebalanceSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Queue no more of its moves (those under way finish)."""
        return Response(self.get_serializer(rebalance.cancel(self.get_object(),
                                                             request.user)).data)
