"""API: plans. Everyone signed in reads the active ones; staff create, edit, retire."""

from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from hosting.core import roles
from hosting.core.api import StaffCan
from hosting.environments.models import OSTemplate

from . import seccomp, services
from .fields import EDITABLE
from .models import Plan


class PlanSerializer(serializers.ModelSerializer):
    templates = serializers.SlugRelatedField(
        slug_field="name", many=True, required=False, queryset=OSTemplate.objects.all(),
        help_text="OS template names, not ids (see /api/v1/templates/)")
    seccomp_allow = seccomp.ApiField(
        required=False, help_text=seccomp.HELP + ". Staff only: customers never see it; "
        "only administrators may change it (403)")

    class Meta:
        model = Plan
        fields = ["id", *EDITABLE]

    def to_representation(self, plan):
        data = super().to_representation(plan)
        request = self.context.get("request")
        if not roles.can(getattr(request, "user", None), "plans.view"):
            data.pop("seccomp_allow", None)  # a host-side defence, not the customer's business
        return data


class PlanViewSet(viewsets.ModelViewSet):
    """Plans. Changing a plan's limits applies them live to its running VPSes."""

    serializer_class = PlanSerializer
    permission_classes = [StaffCan.needing("plans.view", "plans.manage", customers_read=True)]
    filterset_fields = ["active"]

    def get_queryset(self):
        plans = Plan.objects.prefetch_related("templates")
        return plans if roles.can(self.request.user, "plans.view") else plans.filter(active=True)

    def perform_create(self, serializer):
        templates = serializer.validated_data.pop("templates", [])
        plan = Plan(**serializer.validated_data)
        services.save(plan, self.request.user)
        plan.templates.set(templates)
        serializer.instance = plan

    def perform_update(self, serializer):
        plan = serializer.instance
        before = plan.engine_settings()
        templates = serializer.validated_data.pop("templates", None)
        for field, value in serializer.validated_data.items():
            setattr(plan, field, value)
        services.save(plan, self.request.user, before=before)
        if templates is not None:
            plan.templates.set(templates)

    def destroy(self, request, *args, **kwargs):
        """Retire the plan (VEs on it stay); plans are never deleted."""
        services.retire(self.get_object(), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
