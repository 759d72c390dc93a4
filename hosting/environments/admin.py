from django.contrib import admin

from .models import OSTemplate, VirtualEnvironment


@admin.register(OSTemplate)
class OSTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "title", "active")
    list_filter = ("active",)


@admin.register(VirtualEnvironment)
class VirtualEnvironmentAdmin(admin.ModelAdmin):
    list_display = ("veid", "hostname", "owner", "plan", "node", "desired_state", "actual_state")
    list_filter = ("actual_state", "node", "plan")
    search_fields = ("hostname", "owner__company", "owner__user__username")
    list_select_related = ("owner__user", "plan", "node")
