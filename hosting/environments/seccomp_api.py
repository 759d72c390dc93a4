"""API: /api/v1/environments/<veid>/seccomp/, a VPS's seccomp override (staff only)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from hosting.core.api import StaffCan
from hosting.operations.api import OperationSerializer
from hosting.plans import seccomp as names

from . import seccomp


class SeccompOverrideSerializer(serializers.Serializer):
    seccomp_allow = names.ApiField(
        allow_null=True, help_text="the calls or groups this VPS may make although its "
        "filter denies them by default; [] = the full filter; null = follow its plan")
    reboot = serializers.BooleanField(
        required=False, default=False,
        help_text="reboot a running VPS now; else the change takes effect at its next reboot")


class SeccompStateSerializer(serializers.Serializer):
    override = serializers.ListField(child=serializers.CharField(), allow_null=True,
                                     help_text="null: it follows its plan")
    plan = serializers.ListField(child=serializers.CharField(),
                                 help_text="its plan's seccomp_allow")
    effective = serializers.ListField(child=serializers.CharField(),
                                      help_text="what its node is given")


_DOC = """A VPS's seccomp relaxation (docs/security.md, "Relaxing it per VE").

GET (any staff role): the override, its plan's value and the effective one.
POST (administrators): set the override and queue a "set" operation (202)
that stores it on the node. The filter is installed by the VE's init, so a
running VPS gets it at its next reboot, or now with "reboot": true. Unknown
names, or calls that harm the host whatever the VE (modules, kexec, ...),
are refused with 400 and nothing changes; a busy VPS is a 409. Customers get
403 (they never see this setting); staff asking for a VPS that does not
exist get 404."""



class SeccompMixin:
    """The seccomp action of EnvironmentViewSet (needs get_object)."""

    # The error answers (400, 401, 403, 404, 409, with their bodies) are added by
    # hosting.core.api.AutoSchema, as on every route; _DOC says when each comes.
    @extend_schema(methods=["GET"], description=_DOC, responses={200: SeccompStateSerializer})
    @extend_schema(methods=["POST"], description=_DOC, request=SeccompOverrideSerializer,
                   responses={202: OperationSerializer})
    @action(detail=True, methods=["get", "post"], url_path="seccomp",
            permission_classes=[StaffCan.needing("vps.view", "seccomp.manage")])
    def seccomp(self, request, veid=None):
        ve = self.get_object()
        if request.method == "GET":
            return Response(seccomp.describe(ve))
        body = SeccompOverrideSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        op = seccomp.override(ve, request.user, body.validated_data["seccomp_allow"],
                              body.validated_data["reboot"])
        return Response(OperationSerializer(op, context={"request": request}).data, status=202)
