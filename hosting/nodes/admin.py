from django.contrib import admin, messages

from hosting.core.errors import ServiceError

from . import removal
from .models import Node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    """Nodes obey the same rules here as in the API (hosting/nodes/removal.py): a node's
    name is fixed once it reported or holds VEs, and only an empty, silent node goes."""

    list_display = ("name", "state", "last_heartbeat", "cpus", "ram_bytes", "cgroup_version")
    list_filter = ("state",)

    def get_readonly_fields(self, request, obj=None):
        fixed = obj is not None and removal.rename_refusal(obj, obj.name + "-")
        return ("name",) if fixed else ()

    def get_deleted_objects(self, objs, request):
        deleted, counts, _, _ = super().get_deleted_objects(objs, request)
        # removal.refusal is the rule: live VEs make it refuse, while the rows of
        # destroyed ones (PROTECTed in the database) go with the node in removal.remove.
        refusals = [why for why in (removal.refusal(node) for node in objs) if why]
        return deleted, counts, set(), refusals

    def delete_model(self, request, obj):
        removal.remove(obj, request.user)

    def delete_queryset(self, request, queryset):
        for node in queryset:
            try:
                removal.remove(node, request.user)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
