"""The signed-in user's own account pages: API keys (and, with them, staff's view of
everyone's keys; a new key is shown once, on the answer to the POST that made it) and
two-factor sign-in (enrolment, the code step of signing in, recovery codes)."""

from base64 import b32encode

import segno
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import audit, tokens, twofactor
from .lockout import client_address
from .decorators import staff_required
from .models import ApiToken

EXPIRY_CHOICES = [("", "never"), ("7", "in 7 days"), ("30", "in 30 days"),
                  ("90", "in 90 days"), ("365", "in a year")]


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what the key is for")
    expires_in_days = forms.TypedChoiceField(choices=EXPIRY_CHOICES, coerce=int,
                                             empty_value=None, required=False,
                                             label="Expires")
    read_only = forms.BooleanField(required=False, label="Read-only (GET requests only)")


def _issue(request, form):
    data = form.cleaned_data
    token, key = tokens.issue(request.user, data["name"],
                              tokens.expiry_in(data["expires_in_days"]), data["read_only"])
    audit.record(request.user, "auth.token_issued", request.user, prefix=token.prefix,
                 name=token.name, read_only=token.read_only, by="portal",
                 address=request.META.get("REMOTE_ADDR", ""))
    return token, key


@login_required
def api_keys(request):
    """The user's API keys; POST makes one and shows it this once."""
    form = ApiKeyForm(request.POST or None)
    new_key, status = None, 200
    if request.method == "POST":
        if form.is_valid():
            new_key = _issue(request, form)
            form, status = ApiKeyForm(), 201
        else:
            status = 400
    keys = ApiToken.objects.filter(user=request.user).order_by("-created")
    response = render(request, "account/api_keys.html",
                      {"form": form, "keys": keys, "new_key": new_key}, status=status)
    if new_key is not None:
        response["Cache-Control"] = "no-store"  # the page holds the key in clear
    return response


@login_required
@require_POST
def api_key_revoke(request, pk):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)  # others' keys: 404
    _revoke(request, token)
    return redirect("account-api-keys")


def _revoke(request, token):
    audit.record(request.user, "auth.token_revoked", token.user, prefix=token.prefix,
                 name=token.name, by="portal")
    token.delete()
    messages.success(request, f"API key {token.prefix}… ({token.name}) is revoked.")


@staff_required("tokens.view")
def staff_api_keys(request):
    keys = ApiToken.objects.select_related("user").order_by("user__username", "-created")
    query = request.GET.get("q", "").strip()
    if query:
        keys = keys.filter(user__username__icontains=query)
    return render(request, "staff/api_keys.html", {"keys": keys[:500], "q": query})


@staff_required("tokens.manage")
@require_POST
def staff_api_key_revoke(request, pk):
    _revoke(request, get_object_or_404(ApiToken, pk=pk))
    return redirect("staff-api-keys")


# -- two-factor sign-in --------------------------------------------------------------------

class CodeForm(forms.Form):
    code = forms.CharField(max_length=20, label="Code from your authenticator app",
                           widget=forms.TextInput(attrs={"autocomplete": "one-time-code",
                                                         "inputmode": "numeric",
                                                         "autofocus": True}))


class TurnOffForm(CodeForm):
    password = forms.CharField(label="Your password", widget=forms.PasswordInput)


def _safe_next(request, default="home"):
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return resolve_url(default)


@sensitive_post_parameters("code", "password")
@login_required
def two_factor(request):
    """Enrol (scan, confirm with a code, keep the recovery codes), or, enrolled: new
    recovery codes, or turn it off (customers the provider lets choose)."""
    user = request.user
    device = twofactor.totp_device(user)
    if device is None:
        return _enrol(request)
    action = request.POST.get("action") if request.method == "POST" else None
    status, codes = 200, None
    code_form, off_form = CodeForm(), TurnOffForm()
    if action == "recovery-codes":
        code_form = CodeForm(request.POST)
        if code_form.is_valid() and twofactor.verify(user, code_form.cleaned_data["code"]):
            codes = twofactor.make_recovery_codes(user)
            audit.record(user, "auth.2fa_recovery_codes", user)
            code_form, status = CodeForm(), 201
        else:
            code_form.add_error(None, "That code did not match.")
            status = 400
    elif action == "turn-off" and not twofactor.required(user):
        off_form = TurnOffForm(request.POST)
        if off_form.is_valid() and user.check_password(off_form.cleaned_data["password"]) \
                and twofactor.verify(user, off_form.cleaned_data["code"]):
            twofactor.remove(user)
            audit.record(user, "auth.2fa_removed", user)
            messages.success(request, "Two-factor sign-in is off.")
            return redirect("two-factor")
        off_form.add_error(None, "The password or the code did not match.")
        status = 400
    from .models import RecoveryCode
    response = render(request, "account/two_factor.html", {
        "enrolled": True, "device": device, "codes": codes, "code_form": code_form,
        "off_form": off_form, "may_turn_off": not twofactor.required(user),
        "codes_left": RecoveryCode.objects.filter(device__user=user).count(),
    }, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _enrol(request):
    user = request.user
    device = twofactor.totp_device(user, confirmed=False)
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    form, status, codes = CodeForm(request.POST or None), 200, None
    if request.method == "POST":
        if form.is_valid() and device.verify_token(form.cleaned_data["code"].strip()):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            codes = twofactor.make_recovery_codes(user)
            twofactor.mark_verified(request, device)
            audit.record(user, "auth.2fa_enrolled", user)
            status = 201
        else:
            form.add_error(None, "That code did not match: check the time on your phone "
                                 "and try the next code.")
            status = 400
    url = device.config_url
    response = render(request, "account/two_factor.html", {
        "enrolled": codes is not None, "enrolling": codes is None, "codes": codes,
        "secret": b32encode(device.bin_key).decode(), "otpauth_url": url,
        "qr_svg": mark_safe(segno.make(url, error="m").svg_inline(scale=4, omitsize=False)),
        "code_form": form, "required": twofactor.required(user),
        "next": _safe_next(request),
    }, status=status)
    response["Cache-Control"] = "no-store"  # the secret, the recovery codes
    return response


@sensitive_post_parameters("code")
@login_required
def two_factor_verify(request):
    """The second step of signing in: a code from the authenticator or a recovery code."""
    user = request.user
    if not twofactor.enrolled(user) or user.is_verified():
        return redirect(_safe_next(request))
    form, status = CodeForm(request.POST or None), 200
    if request.method == "POST":
        device = form.is_valid() and twofactor.verify(user, form.cleaned_data["code"])
        if device:
            twofactor.mark_verified(request, device)
            audit.record(user, "auth.2fa_verified", user, address=client_address(request),
                         recovery_code=device.__class__.__name__ == "RecoveryCodeDevice")
            return redirect(_safe_next(request))
        audit.record(user, "auth.2fa_failed", user, address=client_address(request))
        form.add_error(None, "That code did not match.")
        status = 400
    return render(request, "account/two_factor_verify.html",
                  {"form": form, "next": _safe_next(request)}, status=status)
