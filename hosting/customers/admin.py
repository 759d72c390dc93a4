from django.contrib import admin

from .models import Customer


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "status", "created")
    list_filter = ("status",)
    search_fields = ("company", "contact_name", "user__username", "user__email")
