"""The console card of the VPS page (templates/environments/detail.html, static/js/console.js)."""

import secrets
from urllib.parse import urlsplit

from django.conf import settings

from hosting.core import roles

from . import tickets


def context(request, ve):
    """{"console": ...} for the VPS page, or {} when the viewer gets no console card
    (a terminated VPS; staff whose role may not operate VPSes)."""
    user = request.user
    if ve.actual_state == "destroyed" or (user.is_staff and not roles.can(user, "vps.operate")):
        return {}
    try:
        tickets.check(user, ve)
        why = ""
    except tickets.Denied as exc:
        why = exc.message  # shown; the button asks again (the VPS may have started since)
    return {"console": {"refusal": why, "nonce": secrets.token_urlsafe(16),
                        "idle_minutes": round(settings.CONSOLE_IDLE_SECONDS / 60)}}


def allow(response, request, context):
    """Let the VPS page work under the Content-Security-Policy
    (hosting/core/security.py): the terminal's own <style> elements, which console.js
    tags with the nonce, and the origin of its WebSockets (the console's and the live
    part's push, which every VPS page opens)."""
    console = context.get("console")
    if console:
        response.csp_style_nonce = console["nonce"]
    response.csp_connect = socket_origin(request)
    return response


def socket_origin(request):
    """ws[s]://host[:port] the page's console connects to."""
    parts = urlsplit(tickets.socket_base(request))
    return f"{parts.scheme}://{parts.netloc}"
