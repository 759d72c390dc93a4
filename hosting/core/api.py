"""API plumbing shared by the apps: permissions, the error format and its schema."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views import defaults
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from . import roles
from .errors import ServiceError


class IsStaff(permissions.BasePermission):
    """Staff only (a customer's token or session gets 403); see StaffCan for roles."""

    message = "only staff can use this endpoint"

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class StaffCan(IsStaff):
    """Staff whose role has capability ``read`` (safe methods) or ``write`` (others).

    Make one with ``StaffCan.needing(read, write)``; ``customers_read`` lets
    customers (who are not staff) read too, as plans and templates allow.
    """

    read = write = None
    customers_read = False

    @classmethod
    def needing(cls, read, write=None, customers_read=False):
        roles.CAPABILITIES[read]
        write = write or read
        roles.CAPABILITIES[write]
        base = CustomersReadOrStaffCan if customers_read else cls
        return type(f"{base.__name__}_{read}_{write}".replace(".", "_"), (base,),
                    {"read": read, "write": write})

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        safe = request.method in permissions.SAFE_METHODS
        if not user.is_staff:
            if self.customers_read and safe:
                return True
            self.message = ("only staff can change this" if self.customers_read
                            else "only staff can use this endpoint")
            return False
        if roles.can(user, self.read if safe else self.write):
            return True
        self.message = roles.refusal(user)
        return False


class CustomersReadOrStaffCan(StaffCan):
    """Anyone signed in may read; staff by their role's capabilities (see StaffCan)."""

    customers_read = True


def exception_handler(exc, context):
    """DRF's handler plus: service refusals and model validation become 4xx, never 500."""
    if isinstance(exc, ServiceError):
        body = {"detail": exc.message}
        if exc.field:
            body["field"] = exc.field
        if getattr(exc, "code", None):
            body["code"] = exc.code
        return Response(body, status=exc.status)
    if isinstance(exc, DjangoValidationError):
        body = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)


# -- the error format in the schema -------------------------------------------------------

class ErrorSerializer(serializers.Serializer):
    """Every refusal but a field validation: what is wrong, and where if it is one field."""

    detail = serializers.CharField()
    field = serializers.CharField(required=False, help_text="the request field at fault")
    code = serializers.CharField(required=False, help_text="a stable code, where there is one")


# Field validation answers {"<field>": ["message", ...]}; a service's refusal {"detail", "field"}.
_VALIDATION = {"type": "object", "properties": {
    "detail": {"type": "string"}, "field": {"type": "string"}},
    "additionalProperties": {"type": "array", "items": {"type": "string"}}}

ERRORS = {
    400: ("bad input: each field at fault with its messages, or detail and field", _VALIDATION),
    401: ("not signed in: send Authorization: Token <key> (see /api/v1/auth/token/)",
          ErrorSerializer),
    403: ("not allowed: staff only, the staff role lacks it, a suspended account, a read-only "
          "API key, two-factor sign-in not finished, or the password or code was wrong",
          ErrorSerializer),
    404: ("no such object among those the caller may see (or, on a list, no such page)",
          ErrorSerializer),
    409: ("conflicts with the object's state: busy, wrong state, in use, no capacity",
          ErrorSerializer),
    413: ("request body over the size limit", ErrorSerializer),
    422: ("Idempotency-Key already used with a different request (code "
          "idempotency_key_reused)", ErrorSerializer),
}


def error_responses(*statuses):
    """``responses=`` entries documenting the error answers ``statuses`` (400, 401, ...)."""
    return {code: OpenApiResponse(response=ERRORS[code][1], description=ERRORS[code][0])
            for code in statuses}


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="Up to 100 characters. The same key again answers with the first request's "
                "operation instead of doing it twice. The same key on the same action with a "
                "changed body (or from another caller) is refused with 422 (code "
                "idempotency_key_reused); on another action or VPS with 409. A key stays "
                "bound to its first request for good (it is kept with the operation), so "
                "use a fresh one, such as a UUID, per request.")


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's schema plus the error answers each operation can give."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, response in error_responses(*self._error_statuses()).items():
            responses.setdefault(str(code), self._get_response_for_code(response, str(code),
                                                                        direction=direction))
        return responses

    def _error_statuses(self):
        perms = self.view.get_permissions() if hasattr(self.view, "get_permissions") else []
        public = all(isinstance(p, permissions.AllowAny) for p in perms)
        unsafe = self.method not in permissions.SAFE_METHODS
        staff_only = any(isinstance(p, IsStaff) for p in perms)  # StaffCan: roles too
        codes = set()
        if unsafe or self.get_filter_backends() or self._has_query_parameters():
            codes.add(400)
        if not public:
            codes.add(401)
            if unsafe or staff_only:
                codes.add(403)
        if "{" in self.path or (self._is_list_view() and self._get_paginator()):
            codes.add(404)  # a list's page past the last, or page=0, is "Invalid page."
        if unsafe and not public:
            codes.add(409)
        if self.method in ("POST", "PUT", "PATCH"):
            codes.add(413)
        if any(getattr(p, "name", None) == IDEMPOTENCY_KEY.name
               for p in self.get_override_parameters()):
            codes.add(422)
        return sorted(codes)

    # A filter or page number sent empty (?owner=&page=) is the same as not sent.
    def _get_filter_parameters(self):
        return [_may_be_empty(p) for p in super()._get_filter_parameters()]

    def _get_pagination_parameters(self):
        return [_may_be_empty(p) for p in super()._get_pagination_parameters()]

    def _has_query_parameters(self):
        return any(getattr(p, "location", None) == OpenApiParameter.QUERY
                   for p in self.get_override_parameters())


def _may_be_empty(parameter):
    if parameter.get("in") == "query" and not parameter.get("required"):
        parameter = {**parameter, "allowEmptyValue": True}
    return parameter


def not_found(request, exception=None):
    """handler404: JSON under /api/ (a URL no route matches, such as a VEID that is no
    number), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
