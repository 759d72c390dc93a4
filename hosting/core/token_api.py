"""The token endpoint: a user name and password in, a new API key out (shown once)."""

from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from . import audit, twofactor
from .api import ErrorSerializer
from .errors import Forbidden, Invalid
from .lockout import client_address
from .models import ApiToken
from .tokens import expiry_in, issue


class CredentialsSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, write_only=True, trim_whitespace=False,
                                     style={"input_type": "password"})
    name = serializers.CharField(max_length=100, required=False, default="token endpoint",
                                 help_text="what the key is for (shown on the API keys page)")
    expires_in_days = serializers.IntegerField(
        required=False, min_value=1, max_value=3650, allow_null=True, default=None,
        help_text="refuse the key after this many days (default: never)")
    read_only = serializers.BooleanField(required=False, default=False,
                                         help_text="the key may only read (GET, HEAD, OPTIONS)")
    otp_code = serializers.CharField(required=False, allow_blank=True, max_length=20,
                                     write_only=True,
                                     help_text="logins with two-factor sign-in: a current code "
                                               "(or a recovery code)")


TokenAnswer = inline_serializer("TokenAnswer", {
    "token": serializers.CharField(help_text="the new key: shown this once, stored hashed"),
    "name": serializers.CharField(),
    "expires": serializers.DateTimeField(allow_null=True),
    "read_only": serializers.BooleanField()})


class ObtainTokenView(APIView):
    """POST a login's user name and password (and, with two-factor sign-in, otp_code):
    a new API key, shown once.

    DELETE (authenticated by that key) revokes the key the request carries.
    """

    throttle_classes = []

    def get_permissions(self):
        if self.request.method == "POST":
            return [permissions.AllowAny()]
        return [permissions.IsAuthenticated()]

    @extend_schema(request=CredentialsSerializer, auth=[{}], responses={
        200: TokenAnswer,
        403: OpenApiResponse(ErrorSerializer, description="staff without two-factor sign-in "
                                                          "(set it up in the portal first)"),
        429: OpenApiResponse(ErrorSerializer, description="too many failed sign-ins: the "
                                                          "account or address is cooling off "
                                                          "(Retry-After)")})
    def post(self, request):
        body = CredentialsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = authenticate(request=request._request, username=body.validated_data["username"],
                            password=body.validated_data["password"])
        seconds = getattr(request._request, "login_locked_seconds", 0)
        if seconds:
            raise exceptions.Throttled(seconds, "too many failed sign-ins; try again later")
        if user is None:
            raise exceptions.ValidationError(
                {"non_field_errors": ["Unable to log in with provided credentials."]})
        data = body.validated_data
        if twofactor.enrolled(user):
            if not twofactor.verify(user, data.get("otp_code", "")):
                audit.record(user, "auth.2fa_failed", user, by="token endpoint",
                             address=client_address(request._request))
                raise exceptions.ValidationError(
                    {"otp_code": ["a current two-factor code is needed (and it did not match)"]})
        elif twofactor.required(user):
            raise Forbidden("set up two-factor sign-in in the portal first "
                            "(/account/two-factor/); then ask for a key with a code")
        token, key = issue(user, data["name"], expiry_in(data["expires_in_days"]),
                           data["read_only"])
        audit.record(user, "auth.token_issued", user, prefix=token.prefix,
                     address=request.META.get("REMOTE_ADDR", ""), read_only=token.read_only)
        return Response({"token": key, "name": token.name, "expires": token.expires,
                         "read_only": token.read_only})

    @extend_schema(request=None, responses={204: None})
    def delete(self, request):
        if not isinstance(request.auth, ApiToken):
            raise Invalid("send the key to revoke in the Authorization header")
        audit.record(request.user, "auth.token_revoked", request.user, prefix=request.auth.prefix)
        request.auth.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
