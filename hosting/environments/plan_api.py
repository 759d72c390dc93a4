"""API: POST /api/v1/environments/<veid>/plan/ changes a VPS's plan (see plan_change.py)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from hosting.core import idempotency
from hosting.core.api import IDEMPOTENCY_KEY
from hosting.operations.api import OperationSerializer
from hosting.plans.models import Plan

from . import plan_change


class PlanChangeSerializer(serializers.Serializer):
    plan = serializers.SlugRelatedField(slug_field="name", queryset=Plan.objects.all(),
                                        help_text="name of the (active) plan to move to")


_DOC = """Move the VPS to another plan (upgrade or downgrade).

Checked first, nothing changed when refused: the plan is active and offers the
VPS's OS template (400); customers may change only as the provider allows,
by default upgrades only (403); the VPS is not busy, being created or
suspended (409); a smaller disk holds the VPS's data as last measured, with a
margin (409; 409 too while its use is unknown); its node has room for the
difference under the placement rule (409 naming what ran out).

Accepted: the VPS has the new plan at once and a "plan" operation (202) applies
it on the node: live where the engine can (RAM, swap, CPU, processes, disk
growth, I/O limits), a smaller disk at the next reboot. If the node refuses
(the data no longer fits: error_code "disk_too_small"), the operation fails
and the old plan is back. The VPS's current plan again answers 200 with the
VPS, unchanged; an Idempotency-Key replays the first answer's operation."""


class _AlreadyOnPlan(Exception):
    """Nothing to do: no operation, so nothing for an Idempotency-Key to remember."""


class PlanChangeMixin:
    """The plan action of EnvironmentViewSet (needs get_object and get_serializer)."""

    @extend_schema(
        request=PlanChangeSerializer, description=_DOC, parameters=[IDEMPOTENCY_KEY],
        responses={202: OperationSerializer,
                   200: OpenApiResponse(OpenApiTypes.OBJECT,
                                        description="already on this plan: the VPS as "
                                                    "GET returns it")})
    @action(detail=True, methods=["post"], url_path="plan")
    def change_plan(self, request, veid=None):
        ve = self.get_object()  # first: another customer's VPS is a 404 whatever the body
        body = PlanChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        plan = body.validated_data["plan"]

        def change(key):
            op = plan_change.change(ve, plan, request.user, key)
            if op is None:
                raise _AlreadyOnPlan
            return op

        try:
            op = idempotency.run(request, change)
        except _AlreadyOnPlan:
            return Response(self.get_serializer(self.get_object()).data)
        return Response(OperationSerializer(op, context={"request": request}).data, status=202)
