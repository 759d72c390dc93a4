from django.contrib import admin

from .models import ApiToken, AuditLog


class ViewOnlyAdmin(admin.ModelAdmin):
    """Rows shown, never added, changed or deleted here (whatever fields a model gains)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditLog)
class AuditLogAdmin(ViewOnlyAdmin):
    """The audit log is append-only."""

    list_display = ("created", "actor", "action", "object_type", "object_id")
    list_filter = ("action", "object_type")
    search_fields = ("object_id", "actor__username")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Revoke keys here (delete); new keys come from the token endpoint or
    ``manage.py api_token``, since a key is shown only when it is made."""

    list_display = ("prefix", "user", "name", "created", "last_used")
    search_fields = ("prefix", "user__username", "name")
    readonly_fields = ("user", "name", "prefix", "digest", "created", "last_used")

    def has_add_permission(self, request):
        return False


# DRF's clear-text Token model stays installed but unused (its rows were moved into
# ApiToken as digests); hide it so nobody makes a clear key there that would not work.
try:
    from rest_framework.authtoken.admin import TokenProxy
    admin.site.unregister(TokenProxy)
except (ImportError, admin.sites.NotRegistered):
    pass
