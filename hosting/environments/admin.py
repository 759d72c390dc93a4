from django.contrib import admin

from hosting.core.admin import ViewOnlyAdmin

from .models import OSTemplate, VirtualEnvironment


@admin.register(OSTemplate)
class OSTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "title", "active", "share_files")
    list_filter = ("active", "share_files")


@admin.register(VirtualEnvironment)
class VirtualEnvironmentAdmin(ViewOnlyAdmin):
    """Look, don't touch: what a VPS is, where it runs and its state change only through
    operations (orders, plan changes, lifecycle actions), which check placement and
    reach the node. Editing them here would bypass both."""

    list_display = ("veid", "hostname", "owner", "plan", "node", "desired_state", "actual_state")
    list_filter = ("actual_state", "node", "plan")
    search_fields = ("hostname", "owner__company", "owner__user__username")
    list_select_related = ("owner__user", "plan", "node")
