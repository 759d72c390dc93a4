"""API tokens: issued once, stored hashed, checked in constant time.

(No DRF views, and models imported late: DRF imports this module while it
sets up APIView, which may be before Django's apps are ready.)

Clients keep sending ``Authorization: Token <key>``; the database holds only
``sha256(key)`` and the key's first 8 characters (to find the row and to
show which key is which), so a copy of the database gives no working key.
"""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.permissions import SAFE_METHODS

PREFIX_LENGTH = 8
# Each sign-in through the token endpoint makes a new key; beyond this many a
# login's least recently used keys are dropped, so the table cannot grow unbounded.
MAX_TOKENS_PER_USER = 50
# last_used is a convenience for staff, not an audit trail: write it at most this
# often, so API reads do not each take SQLite's write lock.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(key):
    """The stored form of ``key``: hex SHA-256 (keys are random, so no salt is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def issue(user, name="", expires=None, read_only=False):
    """Make a new key for ``user``; return ``(token, key)``. The key exists only here.

    ``expires``: a datetime from which the key is refused (None: never);
    ``read_only``: the key may only read (GET, HEAD, OPTIONS)."""
    from .models import ApiToken
    key = secrets.token_hex(20)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name[:100], prefix=key[:PREFIX_LENGTH],
                                        digest=digest(key), expires=expires,
                                        read_only=read_only)
        stale = ApiToken.objects.filter(user=user) \
            .order_by(Coalesce("last_used", "created").desc(), "-pk") \
            .values_list("pk", flat=True)[MAX_TOKENS_PER_USER:]
        ApiToken.objects.filter(pk__in=list(stale)).delete()
    return token, key


def lookup(key):
    """The ApiToken whose key is ``key``, else None (constant-time digest compare)."""
    from .models import ApiToken
    wanted = digest(key)
    found = None
    for token in ApiToken.objects.filter(prefix=key[:PREFIX_LENGTH]).select_related("user"):
        if hmac.compare_digest(token.digest, wanted):
            found = token
    return found


def expiry_in(days):
    """The expiry ``days`` days from now (None for None or 0: the key never expires)."""
    return timezone.now() + timedelta(days=days) if days else None


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's ``Authorization: Token <key>`` header, checked against hashed keys;
    an expired key is refused (401), a read-only key may only read (403 otherwise)."""

    def authenticate(self, request):
        found = super().authenticate(request)
        if found is not None and found[1].read_only and request.method not in SAFE_METHODS:
            raise exceptions.PermissionDenied("this API key is read-only")
        return found

    def authenticate_credentials(self, key):
        token = lookup(key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        now = timezone.now()
        if token.expired(now):
            raise exceptions.AuthenticationFailed("Token expired.")
        if token.last_used is None or now - token.last_used > LAST_USED_RESOLUTION:
            type(token).objects.filter(pk=token.pk).update(last_used=now)
        return token.user, token
