"""The signed-in user's own account pages (/account/)."""

from django.urls import path

from . import account

urlpatterns = [
    path("api-keys/", account.api_keys, name="account-api-keys"),
    path("api-keys/<int:pk>/revoke/", account.api_key_revoke, name="account-api-key-revoke"),
    path("two-factor/", account.two_factor, name="two-factor"),
    path("two-factor/verify/", account.two_factor_verify, name="two-factor-verify"),
]
