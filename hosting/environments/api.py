"""API: OS templates and VPSes, with lifecycle actions answering 202 + Operation."""

import django_filters
from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from hosting.core import audit, idempotency, roles
from hosting.core.api import IDEMPOTENCY_KEY, StaffCan
from hosting.consoles.api import ConsoleMixin
from hosting.core.filters import BoundedFilterSet
from hosting.core.errors import Conflict, Forbidden, Invalid
from hosting.customers.models import Customer
from hosting.operations.api import OperationSerializer
from hosting.plans.models import Plan
from hosting.usage import graphs, traffic
from hosting.usage.models import TrafficMonth

from . import lifecycle, services
from .models import OSTemplate, VirtualEnvironment as VE
from .plan_api import PlanChangeMixin
from .seccomp_api import SeccompMixin
from .backup_api import BackupsMixin
from .snapshot_api import SnapshotsMixin


class OSTemplateSerializer(serializers.ModelSerializer):
    class Meta:
        model = OSTemplate
        fields = ["id", "name", "title", "active", "share_files"]


class OSTemplateViewSet(viewsets.ModelViewSet):
    serializer_class = OSTemplateSerializer
    permission_classes = [StaffCan.needing("templates.view", "templates.manage",
                                            customers_read=True)]

    def get_queryset(self):
        templates = OSTemplate.objects.all()
        return (templates if roles.can(self.request.user, "templates.view")
                else templates.filter(active=True))

    def perform_create(self, serializer):
        audit.record(self.request.user, "template.create", serializer.save())

    def perform_update(self, serializer):
        # OSTemplate.save refuses a rename of a used template (409, field "name")
        audit.record(self.request.user, "template.update", serializer.save(),
                     changes={k: str(v) for k, v in serializer.validated_data.items()})

    def perform_destroy(self, template):
        why = template.delete_refusal()
        if why:
            raise Conflict(why)
        audit.record(self.request.user, "template.delete", template)
        template.delete()


class EnvironmentFilter(BoundedFilterSet):
    # A plain number, not a choice: a customer must not learn which customer ids exist.
    owner = django_filters.NumberFilter(field_name="owner_id", help_text="customer id")
    node = django_filters.CharFilter(field_name="node__name", help_text="node name")
    plan = django_filters.CharFilter(field_name="plan__name",
                                     help_text="plan name (see /api/v1/plans/)")

    class Meta:
        model = VE
        fields = ["actual_state", "desired_state", "crash_loop"]


class EnvironmentSerializer(serializers.ModelSerializer):
    owner = serializers.PrimaryKeyRelatedField(read_only=True)
    plan = serializers.SlugRelatedField(slug_field="name", read_only=True,
                                        help_text="plan name (see /api/v1/plans/)")
    node = serializers.SlugRelatedField(slug_field="name", read_only=True,
                                        help_text="node name")
    template = serializers.SlugRelatedField(slug_field="name", read_only=True,
                                            help_text="OS template name (see /api/v1/templates/)")
    addresses = serializers.SlugRelatedField(slug_field="address", many=True, read_only=True)
    url = serializers.HyperlinkedIdentityField(view_name="environment-detail", lookup_field="veid")
    traffic = serializers.SerializerMethodField()

    class Meta:
        model = VE
        fields = ["veid", "url", "hostname", "owner", "plan", "node", "template",
                  "desired_state", "actual_state", "crash_loop", "addresses", "traffic",
                  "created"]
        read_only_fields = fields

    def get_traffic(self, ve) -> dict:
        """This month's traffic against the plan's quota (bytes; quota null = unmetered)."""
        month = this_month(ve)
        return {"month": month.month.strftime("%Y-%m"), "rx_bytes": month.rx_bytes,
                "tx_bytes": month.tx_bytes, "used_bytes": month.total_bytes,
                "quota_bytes": traffic.quota_bytes(ve, month), "extra_gib": month.extra_gib,
                "throttled": ve.throttled, "suspended_for_traffic": ve.suspended_for_traffic}


def with_this_month(ves):
    """``ves`` with this month's traffic row read in one query for all of them (a list
    of 50 VPSes would otherwise ask once per VPS); ``this_month`` reads it."""
    rows = TrafficMonth.objects.filter(month=traffic.month_of())
    return ves.prefetch_related(Prefetch("traffic", queryset=rows, to_attr="traffic_this_month"))


def this_month(ve):
    """This month's TrafficMonth of ``ve``: the row ``with_this_month`` read, else asked."""
    rows = getattr(ve, "traffic_this_month", None)
    if rows is None:
        return traffic.current(ve)
    return rows[0] if rows else TrafficMonth(environment=ve, month=traffic.month_of())


class OrderSerializer(serializers.Serializer):
    plan = serializers.SlugRelatedField(slug_field="name", queryset=Plan.objects.all(),
                                        help_text="plan name, not id (see /api/v1/plans/)")
    template = serializers.SlugRelatedField(
        slug_field="name", queryset=OSTemplate.objects.all(),
        help_text="OS template name, not id (see /api/v1/templates/)")
    hostname = serializers.CharField(max_length=253)
    root_password = serializers.CharField(required=False, allow_blank=True, write_only=True,
                                          style={"input_type": "password"})
    ssh_key = serializers.CharField(required=False, allow_blank=True)
    customer = serializers.PrimaryKeyRelatedField(queryset=Customer.objects.all(), required=False,
                                                  help_text="staff only: whose VPS this is")


class AddressSerializer(serializers.Serializer):
    version = serializers.ChoiceField(choices=[4, 6], required=False,
                                      help_text="take the next free address of this IP version")
    address = serializers.IPAddressField(required=False, help_text="or this one")

    def validate(self, attrs):
        if not attrs.get("version") and not attrs.get("address"):
            raise serializers.ValidationError("give a version (4 or 6) or an address")
        return attrs


class ExtraTrafficSerializer(serializers.Serializer):
    extra_gib = serializers.IntegerField(min_value=1, max_value=1_000_000,
                                         help_text="GiB added to this month's allowance")


def accepted(op, request):
    return Response(OperationSerializer(op, context={"request": request}).data,
                    status=status.HTTP_202_ACCEPTED)


@lifecycle.install  # start, stop, reboot, terminate, suspend, resume, migrate, reinstall,
#                     password, snapshot, rollback, delete-snapshot, backup, restore-backup,
#                     restore-files
class EnvironmentViewSet(PlanChangeMixin, SeccompMixin, SnapshotsMixin, BackupsMixin,
                         ConsoleMixin, mixins.CreateModelMixin,
                         mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """VPSes. POST orders one; actions and DELETE answer 202 with the Operation to poll."""

    serializer_class = EnvironmentSerializer
    lookup_field = "veid"
    lookup_value_regex = r"\d+"
    filterset_class = EnvironmentFilter

    def get_queryset(self):
        ves = VE.objects.for_user(self.request.user) \
            .select_related("plan", "node", "template").prefetch_related("addresses")
        if self.action in ("list", "retrieve"):  # what shows the traffic (not the actions)
            ves = with_this_month(ves)
        if self.action == "list" and "actual_state" not in self.request.query_params:
            ves = ves.live()
        return ves

    @extend_schema(request=OrderSerializer, responses={202: OperationSerializer},
                   parameters=[IDEMPOTENCY_KEY],
                   description="Order a VPS: answers 202 with its 'create' operation. Plan and "
                               "template are given by name. Honours Idempotency-Key.")
    def create(self, request, *args, **kwargs):
        order = OrderSerializer(data=request.data)
        if not request.user.is_staff:  # a customer may name only themselves (no id probing)
            order.fields["customer"].queryset = Customer.objects.filter(user=request.user)
        order.is_valid(raise_exception=True)
        data = order.validated_data
        if request.user.is_staff:
            customer = data.get("customer")
            if customer is None:
                raise Invalid("staff must say which customer the VPS is for", field="customer")
        elif data.get("customer") not in (None, getattr(request.user, "customer", None)):
            raise Forbidden("customers order for themselves only")
        else:
            customer = getattr(request.user, "customer", None)
            if customer is None:
                raise Forbidden("this login has no customer account")
        op = idempotency.run(request, lambda key: services.order(
            customer, data["plan"], data["template"], data["hostname"], request.user,
            data.get("root_password", ""), data.get("ssh_key", ""), idempotency_key=key))
        return accepted(op, request)

    @lifecycle.schema(lifecycle.BY_NAME["terminate"])
    def destroy(self, request, *args, **kwargs):
        """Terminate the VPS: its files go and its addresses return to the pool."""
        return lifecycle.perform(self, lifecycle.BY_NAME["terminate"])

    @extend_schema(request=ExtraTrafficSerializer, responses={200: EnvironmentSerializer})
    @action(detail=True, methods=["post"], url_path="traffic",
            permission_classes=[StaffCan.needing("vps.plan")])
    def add_traffic(self, request, veid=None):
        """Staff: grant extra traffic this month; lifts a throttle or suspension it covers."""
        body = ExtraTrafficSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ve = services.add_traffic(self.get_object(), request.user,
                                  body.validated_data["extra_gib"])
        return Response(EnvironmentSerializer(ve, context={"request": request}).data)

    @extend_schema(request=AddressSerializer, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"], url_path="addresses")
    def add_address(self, request, veid=None):
        """Staff: give the VPS one more address (applied live if it runs)."""
        body = AddressSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        op = services.add_address(self.get_object(), request.user,
                                  body.validated_data.get("version"),
                                  body.validated_data.get("address"))
        return accepted(op, request)

    @extend_schema(request=None, responses={202: OperationSerializer})
    @action(detail=True, methods=["delete"], url_path=r"addresses/(?P<address>[0-9a-fA-F.:]+)")
    def remove_address(self, request, veid=None, address=None):
        """Staff: take an address from the VPS back into its pool."""
        op = services.remove_address(self.get_object(), request.user, address)
        return accepted(op, request)

    @extend_schema(parameters=[OpenApiParameter("range", str, enum=list(graphs.RANGES),
                                                default="24h")],
                   responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def usage(self, request, veid=None):
        """Usage over 1h, 24h, 7d or 30d for graphs: CPU (CPUs busy), RAM, swap, disk,
        inodes, processes, traffic and disk I/O (bytes/s), limit hits, tracked
        connections (``conntrack``: held; ``conntrack_refused``: new ones the plan's
        cap dropped in each point's period), and the limits (``limits.conntrack`` is
        the plan's connection cap, null = none). ``connections`` is the latest
        reading: {"held", "refused" (since the VPS started), "limit", "time"}; held and
        refused are null where not measured (stopped, no cap, no recent sample)."""
        ve = self.get_object()
        name = request.query_params.get("range", "24h")
        if name not in graphs.RANGES:
            raise Invalid(f"range must be one of {', '.join(graphs.RANGES)}", field="range")
        return Response(graphs.usage(ve, name))
