from django.contrib import admin

from hosting.core.admin import ViewOnlyAdmin

from .models import Operation


@admin.register(Operation)
class OperationAdmin(ViewOnlyAdmin):
    """Operations are requested through the API and pages, and run by the nodes."""

    list_display = ("created", "kind", "environment", "state", "progress", "requested_by")
    list_filter = ("state", "kind")
