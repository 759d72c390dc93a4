"""REST API v1: one router over every app's viewsets, plus the OpenAPI schema and docs."""

from django.urls import include, path
from drf_spectacular.views import (SpectacularAPIView, SpectacularRedocView,
                                   SpectacularSwaggerSplitView)
from rest_framework.routers import DefaultRouter

from hosting.core.audit_api import AuditLogViewSet
from hosting.core.token_api import ObtainTokenView
from hosting.customers.api import CustomerViewSet
from hosting.environments.api import EnvironmentViewSet, OSTemplateViewSet
from hosting.ipam.api import IPPoolViewSet
from hosting.nodes.api import NodeViewSet
from hosting.nodes.rebalance_api import RebalanceViewSet
from hosting.operations.api import OperationViewSet
from hosting.plans.api import PlanViewSet

router = DefaultRouter()
router.register("environments", EnvironmentViewSet, basename="environment")
router.register("operations", OperationViewSet, basename="operation")
router.register("plans", PlanViewSet, basename="plan")
router.register("templates", OSTemplateViewSet, basename="template")
router.register("customers", CustomerViewSet, basename="customer")
router.register("nodes", NodeViewSet, basename="node")
router.register("rebalances", RebalanceViewSet, basename="rebalance")
router.register("ip-pools", IPPoolViewSet, basename="ippool")
router.register("audit-log", AuditLogViewSet, basename="auditlog")

urlpatterns = [
    path("", include(router.urls)),
    path("auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Split: the page loads its init script as a file (no inline script: the CSP forbids it)
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]
