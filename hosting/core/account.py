"""The signed-in user's own account pages: API keys (and, with them, staff's view of
everyone's keys). A new key is shown once, on the answer to the POST that made it."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from . import audit, tokens
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
