"""API: POST /api/v1/environments/<veid>/console/, a one-time ticket for the VPS's console."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from . import tickets


class ConsoleTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="one use, for this browser session only")
    url = serializers.CharField(help_text="the WebSocket to open with it (ticket included); "
                                          "add &rows=R&cols=C for the terminal's size")
    expires = serializers.DateTimeField(help_text="unused after this, it opens nothing")


_DOC = """A ticket to open the VPS's console (its /dev/console: boot messages, a login
prompt) over a WebSocket, for the signed-in browser session that asks (the portal's VPS
page; an API key gets 403). It works once, within seconds, from this site's pages only,
for the same login and session. The VPS's owner (not while their account or the VPS is
suspended) and staff who may operate VPSes; the VPS must be running (409 otherwise).
Every opening is audited; a session closes after a while without input or output, when
the account or VPS is suspended, the VPS stops or is terminated, or the user signs out."""


class ConsoleMixin:
    """The ``console`` action of the VPS viewset."""

    @extend_schema(request=None, responses={201: ConsoleTicketSerializer}, description=_DOC)
    @action(detail=True, methods=["post"], url_path="console")
    def console(self, request, veid=None):
        ve = self.get_object()  # someone else's VPS: 404
        ticket = tickets.issue(request, ve)
        response = Response(ConsoleTicketSerializer(ticket).data, status=201)
        response["Cache-Control"] = "no-store"  # a ticket is a credential, if briefly
        return response
