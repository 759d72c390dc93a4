"""API: GET /api/v1/environments/<veid>/snapshots/, a VPS's snapshots and its plan's
allowance (taking, rolling back and deleting are lifecycle actions: lifecycle.py)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from . import snapshots


class SnapshotSerializer(serializers.Serializer):
    name = serializers.CharField()
    created = serializers.DateTimeField()
    method = serializers.CharField(help_text='"reflink": shares its blocks with the disk; '
                                             '"copy": a full copy')
    own_bytes = serializers.IntegerField(help_text="space it holds of its own (what changed "
                                                   "on the disk since it was taken)")


class SnapshotsSerializer(serializers.Serializer):
    snapshots = SnapshotSerializer(many=True)
    count = serializers.IntegerField()
    allowed = serializers.IntegerField(help_text="how many its plan keeps (0: none)")
    bytes = serializers.IntegerField(help_text="space they hold of their own")
    limit_bytes = serializers.IntegerField(help_text="space its plan allows them")


class SnapshotsMixin:
    """The ``snapshots`` action of the VPS viewset."""

    @extend_schema(responses={200: SnapshotsSerializer})
    @action(detail=True, methods=["get"])
    def snapshots(self, request, veid=None):
        """The VPS's disk snapshots, oldest first, and what they use of its plan's
        allowance (as its node last reported them). Its owner or staff."""
        ve = self.get_object()
        return Response(SnapshotsSerializer({"snapshots": ve.snapshots.all(),
                                             **snapshots.limits(ve)}).data)
