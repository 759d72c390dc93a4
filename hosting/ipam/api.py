"""API: IP pools (staff)."""

from django.db.models import Count
from rest_framework import serializers, viewsets

from hosting.core import audit
from hosting.core.api import StaffCan
from hosting.nodes.models import Node

from . import services
from .models import IPPool


class IPPoolSerializer(serializers.ModelSerializer):
    nodes = serializers.SlugRelatedField(slug_field="name", many=True, queryset=Node.objects.all(),
                                         help_text="node names, not ids (see /api/v1/nodes/)")
    free = serializers.SerializerMethodField()

    class Meta:
        model = IPPool
        fields = ["id", "name", "network", "gateway", "first", "last", "nameservers", "nodes",
                  "free"]

    def get_free(self, pool) -> int:
        return services.free_count(pool, getattr(pool, "held", None))

    def validate(self, attrs):
        pool = IPPool(**{k: v for k, v in attrs.items() if k != "nodes"})
        if self.instance:
            for field in ("name", "network", "gateway", "first", "last", "nameservers"):
                attrs.setdefault(field, getattr(self.instance, field))
                setattr(pool, field, attrs[field])
        pool.clean()
        return attrs


class IPPoolViewSet(viewsets.ModelViewSet):
    # Counted in the list's query: one count per pool otherwise.
    queryset = IPPool.objects.prefetch_related("nodes").annotate(held=Count("addresses")) \
        .order_by("name")  # a grouped query drops Meta.ordering
    serializer_class = IPPoolSerializer
    permission_classes = [StaffCan.needing("pools.view", "pools.manage")]

    def perform_create(self, serializer):
        audit.record(self.request.user, "ippool.create", serializer.save())

    def perform_update(self, serializer):
        from hosting.core.errors import Conflict
        why = services.change_refusal(serializer.instance, serializer.validated_data)
        if why:
            raise Conflict(why)
        audit.record(self.request.user, "ippool.update", serializer.save())

    def perform_destroy(self, pool):
        from hosting.core.errors import Conflict
        why = services.delete_refusal(pool)
        if why:
            raise Conflict(why)
        audit.record(self.request.user, "ippool.delete", pool)
        pool.delete()
