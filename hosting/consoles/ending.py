"""Closing open consoles at once from wherever their reason happens (web side only).

Each open console's consumer is in three Channels groups: its VPS's, its
customer's and its browser session's (``groups``). Suspending a customer
(``customers.services.set_status``), requesting a VPS's suspension or
termination (``operations.services.create``) and signing out send the group a
``console.end`` message, and the consumers close their sockets and relays.

Best effort, bounded: a send gives up after SEND_TIMEOUT (a web request never
waits on a hung Redis). What a lost message leaves open is caught by the
consumers' own check every CONSOLE_RECHECK_SECONDS, and by the node's side: a
VPS that stops ends its console there. Processes without a channel layer (the
node workers, whose Redis user may not use it) send nothing.
"""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)
SEND_TIMEOUT = 1.0
END = "console.end"  # the consumer's handler: console_end


def ve_group(veid):
    return f"console-ve-{veid}"


def customer_group(customer_id):
    return f"console-customer-{customer_id}"


def session_group(session_digest):
    return f"console-session-{session_digest[:64]}"


def end_ve(veid, reason, message):
    """Close every open console of VPS ``veid``."""
    _send(ve_group(veid), reason, message)


def end_customer(customer_id, reason, message):
    """Close every open console of customer ``customer_id``'s VPSes opened by them."""
    _send(customer_group(customer_id), reason, message)


def after_commit(send, *args):
    """Run ``send(*args)`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send(*args))


def on_logout(sender, request=None, user=None, **kwargs):
    """user_logged_out: the consoles of the browser session that signs out end."""
    from .models import ConsoleSession
    from .tickets import digest
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        _send(session_group(digest(key)), ConsoleSession.Reason.REVOKED, "you signed out")


def _send(group, reason, message):
    layer = get_channel_layer()
    if layer is None:
        return
    event = {"type": END, "reason": str(reason), "message": message}
    try:
        async_to_sync(_bounded)(layer, group, event)
    except Exception as exc:  # Redis away or slow: the consumers' recheck closes them
        log.warning("could not tell the consoles of %s to close: %s", group, exc)


async def _bounded(layer, group, event):
    await asyncio.wait_for(layer.group_send(group, event), SEND_TIMEOUT)
