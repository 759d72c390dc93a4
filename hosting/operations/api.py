"""API: operations, read-only (they are created by the lifecycle actions)."""

from rest_framework import serializers, viewsets

from .models import Operation

STAFF_MOVE_FIGURES = ("why_offline", "total_s", "precopy_s", "phases_s")


class OperationSerializer(serializers.ModelSerializer):
    veid = serializers.IntegerField(source="environment.veid", read_only=True, default=None)
    requested_by = serializers.SerializerMethodField()
    origin = serializers.SerializerMethodField()
    move = serializers.SerializerMethodField()
    url = serializers.HyperlinkedIdentityField(view_name="operation-detail")
    error_code = serializers.CharField(
        read_only=True, help_text="why a failed operation failed, for programs to branch on "
        "(never match the error text); blank otherwise. One of: " + "; ".join(
            f"{code} ({meaning})" for code, meaning in Operation.ERROR_CODES.items()))

    class Meta:
        model = Operation
        fields = ["id", "url", "kind", "veid", "state", "progress", "message", "error",
                  "error_code", "requested_by", "origin", "move", "attempts", "created",
                  "started", "finished"]
        read_only_fields = fields

    def to_representation(self, op):
        data = super().to_representation(op)
        data["error"] = op.error_shown_to(self.context["request"].user)
        return data

    def get_origin(self, op) -> str:
        """"user" (a login asked), "system" (the dashboard itself: reconcile, quotas),
        "inside" (the VPS rebooted or powered off by itself), "node" (it stopped
        unexpectedly on its node)."""
        if op.requested_by_id is not None:
            return "user"
        return op.params.get("origin") or "system"

    def get_move(self, op) -> dict | None:
        """A finished "migrate": how it went, as the engine measured it ({"mode": "live",
        "offline" or "settled", "downtime_s": seconds without service or null}; staff
        also read "from", "to", "why_offline", "total_s", "precopy_s", "phases_s").
        Null for other kinds and moves not done."""
        result = op.params.get("result") if op.kind == Operation.Kind.MIGRATE else None
        if not result:
            return None
        shown = {"mode": result.get("mode"), "downtime_s": result.get("downtime_s")}
        if self.context["request"].user.is_staff:  # node names stay with staff
            shown.update({"from": op.params.get("from"), "to": op.params.get("to")},
                         **{key: result.get(key) for key in STAFF_MOVE_FIGURES})
        return shown

    def get_requested_by(self, op) -> str | None:
        """Who asked; customers see staff only as "support" (staff logins stay private)."""
        if op.requested_by is None:
            return None
        return op.requester_shown_to(self.context["request"].user)


class OperationViewSet(viewsets.ReadOnlyModelViewSet):
    """Operations on the caller's VPSes (all of them for staff); poll one to follow it."""

    serializer_class = OperationSerializer
    filterset_fields = ["state", "kind", "environment__veid"]

    def get_queryset(self):
        return Operation.objects.for_user(self.request.user) \
            .select_related("environment", "requested_by")
