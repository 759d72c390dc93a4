"""API: the audit log (staff, read-only)."""

from rest_framework import serializers, viewsets

from .api import StaffCan
from .models import AuditLog


class AuditLogSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None, read_only=True,
                                  allow_null=True)  # None: the system, or a failed sign-in

    class Meta:
        model = AuditLog
        fields = ["id", "created", "actor", "action", "object_type", "object_id", "detail"]


class AuditLogViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = AuditLog.objects.select_related("actor")
    serializer_class = AuditLogSerializer
    permission_classes = [StaffCan.needing("audit.view")]
    filterset_fields = ["action", "object_type", "object_id"]
