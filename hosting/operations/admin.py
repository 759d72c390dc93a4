from django.contrib import admin

from .models import Operation


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ("created", "kind", "environment", "state", "progress", "requested_by")
    list_filter = ("state", "kind")
    readonly_fields = [f.name for f in Operation._meta.fields]
