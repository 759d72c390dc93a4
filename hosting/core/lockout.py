"""Sign-in lockout: an escalating cool-off per account and per client address.

After LOGIN_FAILURE_LIMIT wrong passwords for one account (or
LOGIN_ADDRESS_FAILURE_LIMIT from one address, which may be a whole office behind
NAT) within LOGIN_FAILURE_WINDOW seconds, sign-ins of that account (from that
address) are refused for LOGIN_COOLOFF seconds; each further lockout within
LOGIN_LOCKOUT_MEMORY doubles the cool-off, up to LOGIN_COOLOFF_MAX. A cool-off
always ends, so nobody can lock an account for good; a correct password after it
works from any address and clears the account's record. Every lockout is in the
audit log (``auth.locked_out``).

Enforced by the authentication backend (``LockoutBackend``): every sign-in that
goes through ``authenticate(request, ...)`` (the sign-in page, the admin's, the
token endpoint) is refused while locked, with the password not even checked.
The client address is ``client_address(request)``: REMOTE_ADDR, or, with
HOSTING_TRUSTED_PROXIES=N (production behind N reverse proxies), the address the
nearest of them saw in X-Forwarded-For.
"""

import math
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from . import audit
from .audit import client_address  # noqa: F401  (used here and imported from here)
from .models import LoginThrottle


def _setting(name, default):
    return getattr(settings, name, default)


def _keys(username, address):
    keys = []
    if username:
        keys.append((LoginThrottle.ACCOUNT, str(username).strip().lower()[:150]))
    if address:
        keys.append((LoginThrottle.ADDRESS, address))
    return keys


def _limit(kind):
    if kind == LoginThrottle.ACCOUNT:
        return int(_setting("LOGIN_FAILURE_LIMIT", 5))
    return int(_setting("LOGIN_ADDRESS_FAILURE_LIMIT", 20))


def cooloff(lockouts):
    """The cool-off after the ``lockouts``-th lockout in a row (1, 2, ...)."""
    base = float(_setting("LOGIN_COOLOFF", 60))
    ceiling = float(_setting("LOGIN_COOLOFF_MAX", 3600))
    return timedelta(seconds=min(base * 2 ** max(lockouts - 1, 0), ceiling))


def wait(username, address, now=None):
    """Seconds until ``username`` may try to sign in from ``address`` again (0: now)."""
    now = now or timezone.now()
    longest = 0
    for kind, key in _keys(username, address):
        row = LoginThrottle.objects.filter(kind=kind, key=key, locked_until__gt=now).first()
        if row is not None:
            longest = max(longest, math.ceil((row.locked_until - now).total_seconds()))
    return longest


def record_failure(username, address, now=None):
    """Count a failed sign-in of ``username`` from ``address``; lock what crossed its limit."""
    now = now or timezone.now()
    window = timedelta(seconds=float(_setting("LOGIN_FAILURE_WINDOW", 900)))
    memory = timedelta(seconds=float(_setting("LOGIN_LOCKOUT_MEMORY", 86400)))
    for kind, key in _keys(username, address):
        with transaction.atomic():
            row, _ = LoginThrottle.objects.select_for_update().get_or_create(kind=kind, key=key)
            if row.locked_until is not None and row.locked_until > now:
                continue  # refused anyway: a failure while locked does not lengthen it
            if row.last_failure is None or now - row.last_failure > window:
                row.failures = 0
            if row.locked_until is not None and now - row.locked_until > memory:
                row.lockouts = 0
            row.failures += 1
            row.last_failure = now
            if row.failures >= _limit(kind):
                row.lockouts += 1
                row.failures = 0
                row.locked_until = now + cooloff(row.lockouts)
                audit.record(None, "auth.locked_out", locked=kind, account=str(username or "")
                             [:150], address=address, lockouts=row.lockouts,
                             until=row.locked_until.isoformat(),
                             seconds=int(cooloff(row.lockouts).total_seconds()))
            row.save()


def record_success(username):
    """A correct password (after any cool-off): the account's record starts afresh."""
    for kind, key in _keys(username, None):
        LoginThrottle.objects.filter(kind=kind, key=key).delete()


class LockedOut(PermissionDenied):
    def __init__(self, seconds):
        super().__init__(f"too many failed sign-ins; try again in {describe(seconds)}")
        self.seconds = seconds


def describe(seconds):
    minutes = math.ceil(seconds / 60)
    return f"{seconds} seconds" if seconds < 60 else \
        f"{minutes} minute{'s' if minutes != 1 else ''}"


class LockoutBackend(ModelBackend):
    """Django's user-name-and-password check, refused while the account or the address
    is cooling off (and then without checking the password)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is not None:
            if username is None:
                from django.contrib.auth import get_user_model
                username = kwargs.get(get_user_model().USERNAME_FIELD)
            seconds = wait(username, client_address(request))
            if seconds:
                request.login_locked_seconds = seconds
                raise LockedOut(seconds)  # Django's authenticate() stops at this backend
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and request is not None:
            record_success(user.get_username())
        return user


def on_login_failed(sender, credentials, request=None, **kwargs):
    """user_login_failed: count it (sign-ins with a request only; a locked-out attempt
    is not counted again)."""
    if request is None or getattr(request, "login_locked_seconds", 0):
        return
    record_failure(credentials.get("username", ""), client_address(request))
