from django.contrib import admin

from .models import Node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("name", "state", "last_heartbeat", "cpus", "ram_bytes", "cgroup_version")
    list_filter = ("state",)
