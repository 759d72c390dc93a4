"""Who may open a VPS's console, the one-time tickets, and the session rows.

A ticket is 32 random bytes (URL-safe text) handed to a signed-in browser by
``POST /api/v1/environments/<veid>/console/``; only its SHA-256 is stored. It
opens one WebSocket, within CONSOLE_TICKET_SECONDS, for the same login, the
same Django session and the same site origin that asked for it, and only while
that login may still open the console (checked again at that moment, and every
CONSOLE_RECHECK_SECONDS while it is open: ``recheck``). Any presentation uses
it up, so a ticket that leaked is dead once tried.

Who may: the VPS's owner while their account is active and the VPS is not
suspended, and staff whose role may operate VPSes (``vps.operate``: support and
administrators); the VPS must be running. Every opening is audited
(``ve.console``).
"""

import hashlib
import logging
import secrets
import time
from datetime import timedelta
from importlib import import_module
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db import transaction
from django.http.request import split_domain_port, validate_host
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from hosting.core import audit, roles
from hosting.core.errors import Conflict, Forbidden
from hosting.core.security import SEEN, STARTED
from hosting.environments.models import VirtualEnvironment as VE

from . import frames
from .models import ConsoleSession

log = logging.getLogger(__name__)
Reason = ConsoleSession.Reason
State = VE.State
PATH = "/ws/console/{veid}/"
# An unused ticket's row is removed this long after it expired; an open session whose
# web side stopped saying it is alive (its server died) is closed as lost after LOST_AFTER.
FORGET_UNUSED = timedelta(minutes=10)
LOST_AFTER = timedelta(minutes=3)


class Denied(Exception):
    """The console may not be opened (or stay open); ``reason`` is a ConsoleSession.Reason,
    ``status`` the HTTP status the API answers with (403 or 409)."""

    def __init__(self, reason, message, status=403):
        super().__init__(message)
        self.reason, self.message, self.status = reason, message, status

    def as_service_error(self):
        return (Conflict if self.status == 409 else Forbidden)(self.message)


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def check(user, ve):
    """Raise Denied unless ``user`` may have ``ve``'s console now."""
    if not (user and user.is_authenticated and user.is_active):
        raise Denied(Reason.REVOKED, "this login is signed out or deactivated")
    if user.is_staff:
        if not roles.can(user, "vps.operate"):
            raise Denied(Reason.REVOKED, roles.refusal(user))
    else:
        customer = getattr(user, "customer", None)
        if customer is None or ve.owner_id != customer.pk:
            raise Denied(Reason.REVOKED, "this is not your VPS")
        if not customer.is_active:
            raise Denied(Reason.SUSPENDED, "your account is suspended; contact support")
        if ve.desired_state == State.SUSPENDED:
            raise Denied(Reason.SUSPENDED, "this VPS is suspended; contact support", 409)
    if State.DESTROYED in (ve.actual_state, ve.desired_state):
        raise Denied(Reason.TERMINATED, "this VPS has been terminated", 409)
    if ve.actual_state == State.SUSPENDED:
        raise Denied(Reason.SUSPENDED, "this VPS is suspended", 409)
    if ve.actual_state != State.RUNNING:
        raise Denied(Reason.ENDED, f"the VPS is {ve.get_actual_state_display().lower()}: its "
                                   "console is there while it runs", 409)


def site_origin(request):
    """The origin (scheme://host[:port]) the browser sees this site at."""
    return f"{request.scheme}://{request.get_host()}"


def socket_base(request):
    """ws[s]://host[:port] where this page's browser opens consoles: CONSOLE_URL, or with
    CONSOLE_URL ":<port>" this site's host on that port (``make run``: the ASGI server's
    own port, whichever name the browser used), else this site itself (production: the
    reverse proxy sends /ws/ to the ASGI server)."""
    scheme = "wss" if request.is_secure() else "ws"
    configured = settings.CONSOLE_URL.rstrip("/")
    if configured.startswith(":"):
        host = split_domain_port(request.get_host())[0]
        return f"{scheme}://{f'[{host}]' if ':' in host else host}{configured}"
    return configured or f"{scheme}://{request.get_host()}"


def socket_url(request, veid, ticket):
    """The WebSocket URL of ``veid``'s console with ``ticket``."""
    return f"{socket_base(request)}{PATH.format(veid=veid)}?ticket={ticket}"


def issue(request, ve):
    """A new ticket for ``request.user`` to open ``ve``'s console: {"ticket", "url",
    "expires"}. Raises Forbidden or Conflict (as the API answers) when they may not."""
    try:
        check(request.user, ve)
    except Denied as exc:
        raise exc.as_service_error() from None
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if request.auth is not None or not session_key:
        # The socket is tied to the browser session that asked: an API key has none.
        raise Forbidden("a console ticket is for a signed-in browser session (the portal's "
                        "VPS page), not for an API key")
    ticket = secrets.token_urlsafe(32)
    now = timezone.now()
    expires = now + timedelta(seconds=settings.CONSOLE_TICKET_SECONDS)
    _tidy(now)
    ConsoleSession.objects.create(
        user=request.user, username=request.user.get_username(),
        staff=request.user.is_staff, environment=ve, veid=ve.veid, node=ve.node.name,
        address=audit.client_address(request) or None, ticket_digest=digest(ticket),
        ticket_expires=expires, session_digest=digest(session_key),
        origin=site_origin(request))
    return {"ticket": ticket, "url": socket_url(request, ve.veid, ticket), "expires": expires}


def _tidy(now):
    """Forget tickets never presented, and close sessions whose web side is gone."""
    ConsoleSession.objects.filter(opened__isnull=True, closed__isnull=True,
                                  ticket_expires__lt=now - FORGET_UNUSED).delete()
    for pk in ConsoleSession.objects.open().filter(alive__lt=now - LOST_AFTER) \
            .values_list("pk", flat=True):
        close(pk, Reason.LOST, "the web server relaying it stopped")


def origin_allowed(origin, host):
    """True if a WebSocket's Origin is a page of this site and its Host one of its names
    (ALLOWED_HOSTS; Django checks HTTP requests' Host, nothing does for sockets)."""
    parsed = urlsplit(origin or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return False
    allowed = settings.ALLOWED_HOSTS
    return all(validate_host(split_domain_port(name)[0], allowed) for name in
               (parsed.netloc.lower(), (host or "").lower()))


def redeem(ticket, veid, user, session_key, origin):
    """Use ``ticket`` up and open its session: the ConsoleSession, with its relay key.

    Raises Denied (the row, if there is one, records the refusal) when the ticket
    is unknown, used, expired, for another VPS, login, session or origin, or when
    the login may no longer open this console."""
    if not ticket or len(ticket) > 100:
        raise Denied(Reason.REFUSED, "no ticket")
    now = timezone.now()
    with transaction.atomic():
        row = ConsoleSession.objects.select_for_update() \
            .filter(ticket_digest=digest(ticket)).first()
        if row is None:
            raise Denied(Reason.REFUSED, "unknown ticket")
        if row.opened or row.closed:
            raise Denied(Reason.REFUSED, "this ticket was used already")
        why = _mismatch(row, now, veid, user, session_key, origin)
        ve = None
        if not why:
            ve = VE.objects.select_related("node").filter(pk=row.environment_id).first()
            try:
                if ve is None:
                    raise Denied(Reason.TERMINATED, "this VPS is gone")
                check(user, ve)
            except Denied as exc:
                why = exc.message
        if why:  # recorded (the ticket is used up), then refused below, after the commit
            row.opened = row.closed = now
            row.close_reason, row.detail, row.duration = Reason.REFUSED, why[:200], timedelta(0)
            row.save(update_fields=["opened", "closed", "close_reason", "detail", "duration"])
        else:
            row.opened = row.alive = now
            row.node = ve.node.name
            row.relay_key = frames.new_key()
            row.save(update_fields=["opened", "alive", "node", "relay_key"])
            audit.record(user, "ve.console", ve, session=str(row.pk), staff=row.staff,
                         address=row.address or "")
    if why:
        log.info("console ticket of %s for VPS %s refused: %s", row.username, row.veid, why)
        raise Denied(Reason.REFUSED, why)
    row.customer_id = None if row.staff else ve.owner_id  # for its Channels groups
    return row


def _mismatch(row, now, veid, user, session_key, origin):
    """Why ``row``'s ticket does not open this socket ("" if it does)."""
    if row.ticket_expires <= now:
        return "this ticket has expired"
    if row.veid != veid:
        return "this ticket is for another VPS"
    if not (user and user.is_authenticated) or row.user_id != user.pk:
        return "this ticket is another login's"
    if not session_key or not constant_time_compare(row.session_digest, digest(session_key)):
        return "this ticket is another session's"
    if row.origin != origin:
        return "this ticket was asked for by another site"
    return ""


def recheck(session_id, user_id, session_key):
    """Raise Denied if the open session may not go on: the login, its rights, its
    Django session (signed out, expired) or the VPS changed. Notes it alive."""
    row = ConsoleSession.objects.filter(pk=session_id).only("environment_id").first()
    user = get_user_model().objects.filter(pk=user_id).first()
    ve = VE.objects.filter(pk=row.environment_id).first() if row else None
    if ve is None:
        raise Denied(Reason.TERMINATED, "this VPS is gone")
    check(user, ve)
    if not session_alive(session_key, user):
        raise Denied(Reason.REVOKED, "the browser session ended (signed out or expired)")
    ConsoleSession.objects.filter(pk=session_id).update(alive=timezone.now())


def session_alive(session_key, user):
    """True if Django session ``session_key`` is still ``user``'s signed-in session and
    within the portal's idle and absolute limits (hosting.core.security)."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = store.load()
    if str(data.get(SESSION_KEY, "")) != str(user.pk):
        return False
    if not constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
        return False  # the password changed: Django signs such sessions out
    now = time.time()
    started, seen = data.get(STARTED, now), data.get(SEEN, now)
    return now - started <= settings.SESSION_ABSOLUTE_SECONDS and \
        now - seen <= settings.SESSION_IDLE_SECONDS


def close(session_id, reason, detail=""):
    """Record that session ``session_id`` ended (once) and wipe its relay key."""
    now = timezone.now()
    row = ConsoleSession.objects.filter(pk=session_id, closed__isnull=True) \
        .only("opened").first()
    if row is None:
        return False
    return bool(ConsoleSession.objects.filter(pk=session_id, closed__isnull=True).update(
        closed=now, close_reason=reason, detail=detail[:200], relay_key=None,
        duration=(now - row.opened) if row.opened else None))
