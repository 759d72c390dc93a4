from django.contrib import admin

from .models import Plan


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("name", "ram_mb", "cpu_units", "cpu_limit_pct", "disk_gib",
                    "monthly_price", "active")
    list_filter = ("active",)
