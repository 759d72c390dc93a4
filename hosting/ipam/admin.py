from django.contrib import admin

from .models import IPAddress, IPPool


@admin.register(IPPool)
class IPPoolAdmin(admin.ModelAdmin):
    list_display = ("name", "network", "gateway", "first", "last")


@admin.register(IPAddress)
class IPAddressAdmin(admin.ModelAdmin):
    list_display = ("address", "pool", "environment")
    list_filter = ("pool",)
    search_fields = ("address",)
