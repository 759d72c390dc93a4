from django import forms
from django.contrib import admin, messages

from . import services
from .models import IPAddress, IPPool


class IPPoolForm(forms.ModelForm):
    class Meta:
        model = IPPool
        fields = "__all__"

    def clean(self):
        data = super().clean()
        if self.instance.pk and not self.errors:
            why = services.change_refusal(self.instance, data)
            if why:
                raise forms.ValidationError(why)
        return data


@admin.register(IPPool)
class IPPoolAdmin(admin.ModelAdmin):
    """The API's rules (hosting/ipam/services.py): no pool goes, and no range shrinks
    or node leaves, while VEs hold its addresses."""

    form = IPPoolForm
    list_display = ("name", "network", "gateway", "first", "last")

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms, protected = super().get_deleted_objects(objs, request)
        refusals = [why for why in (services.delete_refusal(pool) for pool in objs) if why]
        if refusals:  # the reason, rather than "no permission to delete ip address"
            return deleted, counts, set(), protected + refusals
        return deleted, counts, perms, protected

    def delete_queryset(self, request, queryset):
        for pool in queryset:  # checked again: an address may be taken meanwhile
            why = services.delete_refusal(pool)
            if why:
                self.message_user(request, why, messages.ERROR)
            else:
                pool.delete()


@admin.register(IPAddress)
class IPAddressAdmin(admin.ModelAdmin):
    """Addresses are handed out and taken back by orders and terminations only."""

    list_display = ("address", "pool", "environment")
    list_filter = ("pool",)
    search_fields = ("address",)
    readonly_fields = ("pool", "address", "environment")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return obj is None or obj.environment_id is None  # a held one: terminate the VPS
