from django.contrib import admin

from .models import TrafficMonth


@admin.register(TrafficMonth)
class TrafficMonthAdmin(admin.ModelAdmin):
    list_display = ("environment", "month", "rx_bytes", "tx_bytes", "updated")
    list_filter = ("month",)
