from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from . import roles
from .models import ApiToken, AuditLog, StaffRole

# The back office is for administrators (roles.py): support, billing and auditors,
# though staff (is_staff), use the staff pages, which check their role.
_staff_may_enter = admin.site.has_permission
admin.site.has_permission = lambda request: (_staff_may_enter(request)
                                             and roles.can(request.user, "admin.site"))


class StaffRoleInline(admin.StackedInline):
    model = StaffRole
    can_delete = True
    extra = 0
    max_num = 1
    verbose_name_plural = "staff role (what a staff login may do; a superuser is an administrator)"


User = get_user_model()
try:
    admin.site.unregister(User)
except admin.sites.NotRegistered:
    pass


@admin.register(User)
class UserWithRoleAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, StaffRoleInline]


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
