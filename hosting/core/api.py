"""API plumbing shared by the apps: permissions and the error format."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import permissions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ServiceError


class IsStaff(permissions.BasePermission):
    """Staff only (a customer's token or session gets 403)."""

    message = "only staff can use this endpoint"

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class ReadOnlyOrStaff(permissions.BasePermission):
    """Anyone signed in may read; only staff may write."""

    message = "only staff can change this"

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or request.user.is_staff


def exception_handler(exc, context):
    """DRF's handler plus: service refusals and model validation become 4xx, never 500."""
    if isinstance(exc, ServiceError):
        body = {"detail": exc.message}
        if exc.field:
            body["field"] = exc.field
        return Response(body, status=exc.status)
    if isinstance(exc, DjangoValidationError):
        body = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
