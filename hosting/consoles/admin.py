from django.contrib import admin

from hosting.core.admin import ViewOnlyAdmin

from .models import ConsoleSession


@admin.register(ConsoleSession)
class ConsoleSessionAdmin(ViewOnlyAdmin):
    """The console sessions' audit trail: who, which VPS, when, how long, why it ended."""

    list_display = ("issued", "username", "staff", "veid", "node", "address", "opened",
                    "duration", "close_reason")
    list_filter = ("close_reason", "staff", "node")
    search_fields = ("username", "=veid")
    exclude = ("ticket_digest", "session_digest", "relay_key")
