"""Issue 14: API keys are named, may expire, may be read-only, are shown once and are
revoked from the portal's API keys page or the staff page of every login's keys."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from hosting.core import tokens
from hosting.core.models import ApiToken, AuditLog

from .helpers import PASSWORD, counts, fill, text

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token/"


def _client(key):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


# -- scope and expiry ----------------------------------------------------------------------

def test_the_token_endpoint_makes_a_named_read_only_expiring_key(world):
    response = APIClient().post(TOKEN_URL, {"username": "bob", "password": PASSWORD,
                                            "name": "grafana", "expires_in_days": 30,
                                            "read_only": True}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["read_only"]) == ("grafana", True)
    token = ApiToken.objects.get(user=world["b"].user)
    assert (token.name, token.read_only) == ("grafana", True)
    left = token.expires - timezone.now()
    assert timedelta(days=29, hours=23) < left <= timedelta(days=30)


def test_a_key_without_expiry_or_scope_may_read_and_write(world):
    _, key = tokens.issue(world["b"].user, "ci")
    client = _client(key)
    assert client.get("/api/v1/environments/").status_code == 200
    assert client.post(fill("/api/v1/environments/{ve_b}/reboot/", world)).status_code == 202


@pytest.mark.parametrize("method, path, body", [
    ("post", "/api/v1/environments/{ve_b}/reboot/", None),
    ("post", "/api/v1/environments/{ve_b}/stop/", None),
    ("delete", "/api/v1/environments/{ve_b}/", None),
    ("post", "/api/v1/environments/{ve_b}/password/",
     {"root_password": "Root-Pass-Word-42", "current_password": PASSWORD}),
    ("post", "/api/v1/environments/", {"plan": "small", "template": "busybox",
                                        "hostname": "ro.example.com",
                                        "root_password": "Root-Pass-Word-42"}),
    ("delete", TOKEN_URL, None),
])
def test_a_read_only_key_reads_and_every_write_is_refused(world, method, path, body):
    _, key = tokens.issue(world["b"].user, "monitoring", read_only=True)
    client = _client(key)
    assert client.get(fill("/api/v1/environments/{ve_b}/", world)).status_code == 200
    assert client.get("/api/v1/operations/").status_code == 200
    before = counts()
    response = getattr(client, method)(fill(path, world), body, format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "this API key is read-only"}
    assert counts() == before and ApiToken.objects.count() == 1


def test_a_read_only_staff_key_cannot_write_whatever_the_role(world):
    _, key = tokens.issue(world["staff"], "dashboards", read_only=True)
    client = _client(key)
    assert client.get("/api/v1/nodes/").status_code == 200
    assert client.post("/api/v1/nodes/", {"name": "hn2"}, format="json").status_code == 403


def test_an_expired_key_is_refused_and_one_about_to_expire_works(world):
    token, key = tokens.issue(world["b"].user, "short", expires=tokens.expiry_in(1))
    client = _client(key)
    assert client.get("/api/v1/environments/").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/v1/environments/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Token expired."}


def test_manage_py_api_token_makes_read_only_expiring_keys(world, capsys):
    call_command("api_token", "bob", "--name", "billing-sync", "--expires-days", "7",
                 "--read-only")
    key = capsys.readouterr().out.strip()
    token = tokens.lookup(key)
    assert token.read_only and token.name == "billing-sync"
    assert timedelta(days=6) < token.expires - timezone.now() <= timedelta(days=7)


# -- the portal's API keys page ------------------------------------------------------------

def test_a_customer_makes_a_key_on_the_portal_and_sees_it_once(page_as, world):
    client = page_as("b")
    response = client.post("/account/api-keys/", {"name": "deploy script",
                                                  "expires_in_days": "30", "read_only": "on"})
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    page = text(response)
    token = ApiToken.objects.get(user=world["b"].user)
    key = page.split('id="new-key-value">', 1)[1].split("<", 1)[0]
    assert tokens.lookup(key) == token and token.read_only and token.name == "deploy script"
    assert AuditLog.objects.filter(action="auth.token_issued", detail__by="portal").count() == 1
    again = text(client.get("/account/api-keys/"))
    assert key not in again and "deploy script" in again and "read-only" in again
    assert "never" in _row(again, token.prefix)  # last used: never (it expires in 30 days)
    assert _client(key).get("/api/v1/environments/").status_code == 200
    used = _row(text(client.get("/account/api-keys/")), token.prefix)
    assert "never" not in used and timezone.now().strftime("%Y-%m-%d") in used


def _row(page, prefix):
    return page.split(f'data-key="{prefix}"', 1)[1].split("</tr>", 1)[0]


def test_the_page_lists_only_ones_own_keys(page_as, world):
    tokens.issue(world["a"].user, "alice's key")
    tokens.issue(world["b"].user, "bob's key")
    page = text(page_as("b").get("/account/api-keys/"))
    assert "bob's key" in page and "alice's key" not in page


def test_a_bad_form_makes_no_key(page_as, world):
    response = page_as("b").post("/account/api-keys/", {"name": "", "expires_in_days": "5"})
    assert response.status_code == 400
    assert ApiToken.objects.count() == 0


def test_revoking_ones_own_key_on_the_portal(page_as, world):
    token, key = tokens.issue(world["b"].user, "old laptop")
    response = page_as("b").post(f"/account/api-keys/{token.pk}/revoke/")
    assert (response.status_code, response["Location"]) == (302, "/account/api-keys/")
    assert _client(key).get("/api/v1/environments/").status_code == 401
    row = AuditLog.objects.get(action="auth.token_revoked")
    assert row.actor == world["b"].user and row.detail["prefix"] == token.prefix


def test_another_logins_key_cannot_be_revoked_from_the_portal(page_as, world):
    token, key = tokens.issue(world["b"].user, "bob's")
    for role in ("a", "staff"):  # even staff use the staff page for others' keys
        assert page_as(role).post(f"/account/api-keys/{token.pk}/revoke/").status_code == 404
    assert _client(key).get("/api/v1/environments/").status_code == 200


def test_revoking_needs_post(page_as, world):
    token, _ = tokens.issue(world["b"].user, "k")
    assert page_as("b").get(f"/account/api-keys/{token.pk}/revoke/").status_code == 405
    assert ApiToken.objects.filter(pk=token.pk).exists()


# -- staff: every login's keys -------------------------------------------------------------

def test_the_staff_page_lists_everyones_keys_never_the_keys(page_as, world):
    _, key = tokens.issue(world["b"].user, "bob's deploy key")
    page = text(page_as("auditor").get("/staff/api-keys/"))
    assert "bob's deploy key" in page and "bob" in page and key not in page
    assert "Revoke" not in page  # auditors only read
    assert "Revoke" in text(page_as("staff").get("/staff/api-keys/"))


@pytest.mark.parametrize("role, expected", [("anon", 302), ("a", 403), ("b", 403),
                                            ("staff", 302), ("support", 403),
                                            ("billing", 403), ("auditor", 403)])
def test_staff_revoke_a_key_by_role(page_as, world, role, expected):
    token, key = tokens.issue(world["b"].user, "bob's")
    response = page_as(role).post(f"/staff/api-keys/{token.pk}/revoke/")
    assert response.status_code == expected
    revoked = not ApiToken.objects.filter(pk=token.pk).exists()
    assert revoked == (role == "staff")
    if role == "anon":
        assert response["Location"].startswith("/login/")
    if revoked:
        assert _client(key).get("/api/v1/environments/").status_code == 401
        assert AuditLog.objects.get(action="auth.token_revoked").actor == world["staff"]
