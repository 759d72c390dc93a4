"""Two-factor sign-in: TOTP (an authenticator app) with one-time recovery codes.

Built on django-otp: its TOTPDevice (table ``otp_totp_totpdevice``, the secret
seeds) verifies codes with throttling and refuses a code twice; its middleware
marks a session verified once a code was given (``request.user.is_verified()``).
Recovery codes are our own django-otp device (``core_recoverycodedevice``,
``core_recoverycode``) keeping only SHA-256 digests of the codes. None of these
tables is for nodes (see docs/dashboard.md).

Who must: staff always; customers when TWO_FACTOR_CUSTOMERS is "required"
(otherwise they may). ``TwoFactorMiddleware`` sends a signed-in session that has
a device but no code yet to the code page, and one that must have a device but
has none to the enrolment page, before anything else (API calls over such a
session get 403). API keys are not sessions: the token endpoint asks a user
with a device for a code too (token_api.py), and staff without one get none.
"""

import secrets

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

RECOVERY_CODES = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


def new_recovery_code():
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(10))  # ~49 bits
    return f"{raw[:5]}-{raw[5:]}"


def totp_device(user, confirmed=True):
    if not getattr(user, "is_authenticated", False):
        return None
    return TOTPDevice.objects.filter(user=user, confirmed=confirmed).order_by("id").first()


def enrolled(user):
    """Whether ``user`` signs in with a second factor (a confirmed authenticator)."""
    return totp_device(user) is not None


def required(user):
    """Whether ``user`` must have a second factor (staff; customers if the provider says)."""
    if not getattr(user, "is_authenticated", False):
        return False
    return bool(user.is_staff) or settings.TWO_FACTOR_CUSTOMERS == "required"


def verify(user, code):
    """The device of ``user`` that accepts ``code`` (an authenticator's 6 digits or an
    unused recovery code, which is then used up), or None."""
    from .models import RecoveryCodeDevice
    code = "".join(str(code or "").split())
    if not code or len(code) > 20:
        return None
    device = totp_device(user)
    if device is None:
        return None
    if code.isdigit():
        return device if device.verify_token(code) else None
    for recovery in RecoveryCodeDevice.objects.filter(user=user, confirmed=True):
        if recovery.verify_token(code):
            return recovery
    return None


def make_recovery_codes(user):
    """Replace ``user``'s recovery codes with RECOVERY_CODES new ones; return them (the
    only time they exist in clear)."""
    from .models import RecoveryCode, RecoveryCodeDevice, recovery_digest
    RecoveryCodeDevice.objects.filter(user=user).delete()
    device = RecoveryCodeDevice.objects.create(user=user, name="recovery codes", confirmed=True)
    codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
    RecoveryCode.objects.bulk_create(
        [RecoveryCode(device=device, digest=recovery_digest(code)) for code in codes])
    return codes


def remove(user):
    """Take ``user``'s second factor away (authenticator and recovery codes)."""
    from .models import RecoveryCodeDevice
    TOTPDevice.objects.filter(user=user).delete()
    RecoveryCodeDevice.objects.filter(user=user).delete()


def mark_verified(request, device):
    otp_login(request, device)


# -- the middleware ------------------------------------------------------------------------

VERIFY_URL_NAME = "two-factor-verify"
SETUP_URL_NAME = "two-factor"
# What a half-signed-in session may still open: the code and enrolment pages, signing
# out, static files. Everything else waits for the second factor.
_OPEN_PREFIXES = ("/static/", "/favicon.ico")


def _next(request):
    target = request.get_full_path()
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return target


class TwoFactorMiddleware:
    """A signed-in session goes nowhere but the code page (enrolled, no code yet) or the
    enrolment page (must enrol, has not) until it has done that."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not user.is_active:
            return self.get_response(request)
        if request.path.startswith(_OPEN_PREFIXES) or request.path == reverse("logout"):
            return self.get_response(request)
        verify_url, setup_url = reverse(VERIFY_URL_NAME), reverse(SETUP_URL_NAME)
        if enrolled(user):
            if user.is_verified() or request.path == verify_url:
                return self.get_response(request)
            return self._refuse(request, verify_url,
                                "two-factor sign-in not finished: give your code at "
                                f"{verify_url}")
        if required(user) and request.path != setup_url:
            return self._refuse(request, setup_url,
                                f"set up two-factor sign-in first at {setup_url}")
        return self.get_response(request)

    @staticmethod
    def _refuse(request, url, message):
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message, "code": "two_factor_needed"}, status=403)
        return redirect(f"{url}?{urlencode({'next': _next(request)})}")
