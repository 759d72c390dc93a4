"""API: customers (staff and billing systems)."""

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from hosting.core import audit
from hosting.core.api import StaffCan
from hosting.core.errors import Invalid

from . import services
from .models import Customer


class OptionalEmailField(serializers.EmailField):
    """An email address or null: Django keeps "no address" as "", which is no email,
    so it is answered as null (and null or "" are taken for "none")."""

    def __init__(self, **kwargs):
        super().__init__(allow_null=True, allow_blank=True, required=False, **kwargs)

    def to_representation(self, value):
        return value or None


class CustomerSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    email = OptionalEmailField(source="user.email")
    password = serializers.CharField(write_only=True, style={"input_type": "password"})

    class Meta:
        model = Customer
        fields = ["id", "username", "email", "password", "company", "contact_name", "phone",
                  "status", "created"]
        read_only_fields = ["status", "created"]

    def create(self, validated):
        user = validated.pop("user")
        try:
            return services.create(user["username"], user.get("email") or "",
                                   validated.pop("password"), self.context["request"].user,
                                   **validated)
        except ValidationError as exc:
            raise Invalid(" ".join(exc.messages)) from exc


class CustomerUpdateSerializer(serializers.ModelSerializer):
    class Meta:
        model = Customer
        fields = ["company", "contact_name", "phone"]


class CustomerViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin,
                      viewsets.ReadOnlyModelViewSet):
    """Customers. POST creates the login too; suspend/unsuspend change what they may do."""

    queryset = Customer.objects.select_related("user")
    permission_classes = [StaffCan.needing("customers.view", "customers.manage")]
    filterset_fields = ["status"]

    def get_serializer_class(self):
        return CustomerUpdateSerializer if self.action in ("update", "partial_update") \
            else CustomerSerializer

    def perform_update(self, serializer):
        audit.record(self.request.user, "customer.update", serializer.save())

    @extend_schema(request=None, responses={200: CustomerSerializer})  # no body
    @action(detail=True, methods=["post"])
    def suspend(self, request, pk=None):
        customer = services.set_status(self.get_object(), Customer.Status.SUSPENDED, request.user)
        return Response(CustomerSerializer(customer, context={"request": request}).data)

    @extend_schema(request=None, responses={200: CustomerSerializer})
    @action(detail=True, methods=["post"])
    def unsuspend(self, request, pk=None):
        customer = services.set_status(self.get_object(), Customer.Status.ACTIVE, request.user)
        return Response(CustomerSerializer(customer, context={"request": request}).data,
                        status=status.HTTP_200_OK)
